/* statx for gVisor 2022-12: its Sentry answers EINVAL to AT_NO_AUTOMOUNT, which coreutils
 * (ls -l, stat, cp -a, ...) always passes, and glibc falls back to fstatat only on ENOSYS.
 * Preloaded into gVisor-tier sandboxes through /etc/ld.so.preload (runtimes/gvisor_compat.py);
 * the flag only matters for automount points, which a gVisor sandbox has none of. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef AT_NO_AUTOMOUNT
#define AT_NO_AUTOMOUNT 0x800
#endif

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
    return (int)syscall(SYS_statx, dirfd, path, flags & ~AT_NO_AUTOMOUNT, mask, buf);
}
