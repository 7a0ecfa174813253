"""The README's browser page, as written, in Chromium: the page and the config from the README
(ports replaced by free ones), served as the README serves them (``python3 -m http.server``)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from ugate_core.testing import StartGateway, browser_run, free_port, wait_port

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_parts() -> tuple[str, str]:
    text = README.read_text()
    page = re.search(r"cat > index.html <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    config = re.search(r"<!-- docs-test: config file=ws.toml -->\n```toml\n(.*?)```", text, re.S)
    assert page and config
    return page.group(1), config.group(1)


async def test_readme_page_in_chromium(start_gateway: StartGateway, tmp_path: Path) -> None:
    page, config = readme_parts()
    web, gw_port = free_port(), free_port()
    swap = {"15008": str(gw_port), "8000": str(web), "127.0.0.1:15000": ""}
    for a, b in swap.items():
        page, config = page.replace(a, b), config.replace(a, b)
    (tmp_path / "index.html").write_text(page)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "http.server", str(web), "--bind", "127.0.0.1",
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        await asyncio.to_thread(wait_port, web)
        await start_gateway(config)
        got = await browser_run("""
for (let i = 0; i < 100; i++) {
  const t = document.getElementById('out').textContent;
  if (t !== '...') return t;
  await new Promise((r) => setTimeout(r, 100));
}
return 'no answer';
""", url=f"http://127.0.0.1:{web}/index.html", timeout=30)
    finally:
        server.terminate()
        await server.wait()
    # the page fetched itself through the gateway: an HTTP/1.0 answer holding the page
    assert got.startswith("HTTP/1.0 200 OK"), got
    assert "new WebSocket(" in got
