"""Dockerfile template builds: a first (uncached) build vs a fully cached rebuild vs a rebuild
whose last step changed, median of 5 each, on a private daemon (container-tier build sandboxes).

    .venv/bin/python -m bench.template_build
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

from ._common import PrivateDaemon, machine, median_ms, table

RUNS = 5
DOCKERFILE = """FROM base
RUN python3 -c "open('/opt/blob', 'wb').write(b'x' * (50 << 20))" && echo {token}
COPY src /srv/app/
ENV APP_HOME=/srv/app
WORKDIR /srv/app
RUN echo {last} > /srv/app/last.txt
"""


def build(context: Path, name: str, token: str, last: str) -> float:
    from stockade import Template

    (context / "Dockerfile").write_text(DOCKERFILE.format(token=token, last=last))
    started = time.perf_counter()
    Template.build(str(context / "Dockerfile"), name=name)
    return time.perf_counter() - started


def main() -> None:
    from stockade import Template

    print(machine())
    with PrivateDaemon(pool_size=0), tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        (context / "src").mkdir()
        (context / "src" / "data.bin").write_bytes(secrets.token_bytes(20 << 20))
        first, cached, last_changed, names = [], [], [], []
        for _ in range(RUNS):
            token = secrets.token_hex(4)
            names += [f"bench-tb-{token}-{i}" for i in range(3)]
            first.append(build(context, names[-3], token, "a"))
            cached.append(build(context, names[-2], token, "a"))
            last_changed.append(build(context, names[-1], token, "b"))
        for name in names:
            Template.delete(name)
        Template.prune()
    base = median_ms(first)
    table(
        [
            ("build", "median", "vs first build"),
            ("first (uncached)", f"{base:.0f} ms", "1.00x"),
            ("unchanged (all cached)", f"{median_ms(cached):.0f} ms", f"{median_ms(cached) / base:.3f}x"),
            (
                "last RUN changed",
                f"{median_ms(last_changed):.0f} ms",
                f"{median_ms(last_changed) / base:.2f}x",
            ),
        ]
    )


if __name__ == "__main__":
    main()
