# attack: use the kernel keyrings (not namespaced: shared with the host) via keyctl/add_key
# users: user root
# expect-microvm: contained
from _lib import privileged, syscall

KEY_SPEC_USER_KEYRING, KEYCTL_GET_KEYRING_ID = -4, 0
results = {
    "keyctl": syscall("keyctl", KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0)[1] or "ok",
    "add_key": syscall("add_key", b"user", b"stockade", b"x", 1, KEY_SPEC_USER_KEYRING)[1] or "ok",
    "request_key": syscall("request_key", b"user", b"stockade", 0, 0)[1] or "ok",
}
privileged(results)
