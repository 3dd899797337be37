"""Sandbox images: the on-disk store, id-mapped rootfs copies, and image builds."""

from .build import ImageBuildError, Progress, build_base_image, import_rootfs_tar
from .idmap import IdOutOfRange
from .store import (
    CorruptImage,
    ImageError,
    ImageExists,
    ImageInfo,
    ImageInUse,
    ImageNotFound,
    ImageStore,
    InvalidImageName,
    validate_name,
)

__all__ = [
    "CorruptImage",
    "IdOutOfRange",
    "ImageBuildError",
    "ImageError",
    "ImageExists",
    "ImageInUse",
    "ImageInfo",
    "ImageNotFound",
    "ImageStore",
    "InvalidImageName",
    "Progress",
    "build_base_image",
    "import_rootfs_tar",
    "validate_name",
]
