"""E2B's template definition (``TemplateBuildStartV2``, what ``Template.build`` sends) as a
Dockerfile of Stockade's subset.

- ``fromTemplate`` is a Stockade template (E2B aliases mapped); so is a ``fromImage`` that is a
  bare name (``from_dockerfile("FROM base ...")``); E2B's own base images (``e2bdev/base``,
  ``e2bdev/code-interpreter``) are Stockade's ``base`` and ``code-interpreter``; registry
  images are refused: no registry is pulled from.
- Steps run as ``user`` unless they name another (E2B's default), so the Dockerfile starts
  with ``USER user`` and switches around a step run as someone else.
- ``COPY`` sources are read from the upload of their ``filesHash``, unpacked in a directory of
  that name in the build context.
- Start and ready commands, registries, and COPY owners or modes have no Stockade equivalent
  and are refused with a message saying so.
"""

from __future__ import annotations

import json
import re

from pydantic import Field

from .gate import E2BError
from .wire import TEMPLATE_ALIASES, Loose

#: E2B base images that are Stockade templates.
BASE_IMAGES = {"e2bdev/base": "base", "e2bdev/code-interpreter": "code-interpreter"}
DEFAULT_USER = "user"
HASH = re.compile(r"^[0-9a-f]{16,128}$")


class Step(Loose):
    type: str = Field(max_length=16)
    args: list[str] = Field(default_factory=list, max_length=4096)
    files_hash: str | None = Field(default=None, alias="filesHash", max_length=128)
    force: bool | None = None


class BuildStart(Loose):
    """``POST /v2/templates/{templateID}/builds/{buildID}``."""

    from_image: str | None = Field(default=None, alias="fromImage", max_length=512)
    from_template: str | None = Field(default=None, alias="fromTemplate", max_length=128)
    from_image_registry: dict[str, object] | None = Field(default=None, alias="fromImageRegistry")
    force: bool | None = None
    steps: list[Step] = Field(default_factory=list, max_length=1000)
    start_cmd: str | None = Field(default=None, alias="startCmd")
    ready_cmd: str | None = Field(default=None, alias="readyCmd")

    def base(self) -> str:
        """The Stockade template the build starts from."""
        if self.from_image_registry is not None:
            raise E2BError(
                400,
                "private registries are not supported: Stockade builds from "
                "its own templates; use Template().from_template('base')",
            )
        if self.from_template:
            return TEMPLATE_ALIASES.get(self.from_template, self.from_template)
        image = (self.from_image or "e2bdev/base").removesuffix(":latest")
        if image in BASE_IMAGES:
            return BASE_IMAGES[image]
        if "/" not in image and ":" not in image:  # FROM NAME: a Stockade template
            return image
        raise E2BError(
            400,
            f"image {self.from_image!r} cannot be pulled: Stockade builds "
            f"only from its templates (no registry); use from_base_image() "
            f"or from_template(NAME)",
        )

    def dockerfile(self) -> tuple[str, list[str]]:
        """The Dockerfile and the upload hashes its COPY steps read."""
        if self.start_cmd or self.ready_cmd:
            raise E2BError(
                400,
                "set_start_cmd / set_ready_cmd are not supported: Stockade "
                "templates have no start command; start it with "
                "commands.run(..., background=True) after create",
            )
        lines = [f"FROM {self.base()}", f"USER {DEFAULT_USER}"]
        files: list[str] = []
        user = DEFAULT_USER
        for number, step in enumerate(self.steps, 1):
            kind = step.type.upper()
            if kind == "RUN":
                lines += _run(step, user, number)
            elif kind == "COPY":
                lines.append(_copy(step, number))
                files.append(step.files_hash or "")
            elif kind == "ENV":
                lines.append(_env(step, number))
            elif kind == "WORKDIR" and len(step.args) == 1:
                lines.append("WORKDIR " + json.dumps([step.args[0]]))
            elif kind == "USER" and len(step.args) == 1:
                user = step.args[0]
                lines.append(f"USER {_user(user, number)}")
            else:
                raise E2BError(
                    400,
                    f"step {number}: {step.type} with {len(step.args)} "
                    f"arguments is not a step Stockade can build",
                )
        return "\n".join(lines) + "\n", files


def _user(name: str, number: int) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", name):
        raise E2BError(400, f"step {number}: {name!r} is not a user name")
    return name


def _run(step: Step, user: str, number: int) -> list[str]:
    if not 1 <= len(step.args) <= 2 or not step.args[0]:
        raise E2BError(400, f"step {number}: RUN takes a command and an optional user")
    run = "RUN " + json.dumps(["/bin/sh", "-c", step.args[0]])
    wanted = _user(step.args[1], number) if len(step.args) == 2 and step.args[1] else user
    return [run] if wanted == user else [f"USER {wanted}", run, f"USER {user}"]


def _copy(step: Step, number: int) -> str:
    if len(step.args) < 2 or not step.files_hash or not HASH.fullmatch(step.files_hash):
        raise E2BError(
            400, f"step {number}: COPY needs a source, a destination and the filesHash of its upload"
        )
    if any(step.args[2:4]):
        raise E2BError(
            400,
            f"step {number}: COPY with a user or mode is not supported; "
            f"follow it with run_cmd('chown ...', user='root')",
        )
    src = step.args[0].lstrip("/")
    return "COPY " + json.dumps([f"{step.files_hash}/{src}", step.args[1]])


def _env(step: Step, number: int) -> str:
    if not step.args or len(step.args) % 2:
        raise E2BError(400, f"step {number}: ENV takes name, value pairs")
    pairs = []
    for key, value in zip(step.args[::2], step.args[1::2]):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise E2BError(400, f"step {number}: {key!r} is not a variable name")
        if "\n" in value:
            raise E2BError(400, f"step {number}: the value of {key} has a line break")
        pairs.append(f"{key}=" + "'" + value.replace("'", "'\\''").replace("$", "\\$") + "'")
    return "ENV " + " ".join(pairs)
