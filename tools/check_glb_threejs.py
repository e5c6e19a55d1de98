"""Load .glb files in three.js (GLTFLoader) in headless Chromium, render each, and report what a
browser sees: meshes, the material's texture size, vertex attributes, and rendered pixels.

    apt-get install -y chromium           # once (Debian; any Chromium or Chrome binary works)
    cd tools && npm install               # once: three (and gltf-validator), pinned in package.json
    python tools/check_glb_threejs.py mesh.glb [more.glb ...] [--screenshots DIR]

Each file is served with three.js from a local HTTP server and rendered by SwiftShader (WebGL on
the CPU) from a camera framing its bounds, under an ambient and a directional light. One JSON line
per file: the counts, the mean colour of the pixels the mesh covers, and `ok` (loaded, at least one
mesh, at least 1% of the frame covered, and those pixels not black). Exits 1 if any is not ok.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

THREE = Path(__file__).parent / "node_modules" / "three"
SIZE = 256  # the rendered frame, in pixels
TIMEOUT = 120  # seconds for a page to load, render and report

PAGE = """<!doctype html>
<html><body style="margin:0">
<script type="importmap">
{"imports": {"three": "./three/build/three.module.js", "three/addons/": "./three/examples/jsm/"}}
</script>
<script type="module">
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

const show = (report) => fetch("./report", { method: "POST", body: JSON.stringify(report) });
const size = SIZE_PX;
try {
  const gltf = await new GLTFLoader().loadAsync("./model.glb");
  const meshes = [];
  gltf.scene.traverse((o) => { if (o.isMesh) meshes.push(o); });
  const material = meshes[0]?.material;
  const map = material?.map;
  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  renderer.setSize(size, size);
  renderer.setClearColor(0x000000, 1);
  document.body.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  scene.add(gltf.scene);
  scene.add(new THREE.AmbientLight(0xffffff, 1.0));
  const sun = new THREE.DirectionalLight(0xffffff, 2.0);
  sun.position.set(1, 2, 3);
  scene.add(sun);
  const box = new THREE.Box3().setFromObject(gltf.scene);
  const centre = box.getCenter(new THREE.Vector3());
  const radius = box.getSize(new THREE.Vector3()).length() / 2;
  const camera = new THREE.PerspectiveCamera(40, 1, radius / 100, radius * 100);
  camera.position.copy(centre).add(new THREE.Vector3(0.6, 0.5, 1).normalize().multiplyScalar(radius * 3));
  camera.lookAt(centre);
  renderer.render(scene, camera);
  const gl = renderer.getContext();
  const pixels = new Uint8Array(size * size * 4);
  gl.readPixels(0, 0, size, size, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
  let covered = 0, black = 0;
  const sum = [0, 0, 0];
  for (let i = 0; i < pixels.length; i += 4) {
    const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
    if (r + g + b === 0) continue;  // the black background (or a black surface)
    covered += 1;
    sum[0] += r; sum[1] += g; sum[2] += b;
    if (r + g + b < 30) black += 1;
  }
  await show({
    three: THREE.REVISION,
    meshes: meshes.length,
    material: material?.type ?? null,
    metalness: material?.metalness ?? null,
    roughness: material?.roughness ?? null,
    vertexColors: material?.vertexColors ?? null,
    map: map ? { width: map.image.width, height: map.image.height } : null,
    attributes: meshes[0] ? Object.keys(meshes[0].geometry.attributes).sort() : [],
    covered: covered / (size * size),
    mean: sum.map((s) => Math.round(s / Math.max(covered, 1))),
    nearBlack: black / Math.max(covered, 1),
    png: renderer.domElement.toDataURL("image/png"),
  });
} catch (e) {
  await show({ error: String(e && e.stack || e) });
}
</script>
</body></html>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("no Chromium or Chrome on PATH (apt-get install -y chromium)")


def check(glb: Path, browser: str, screenshots: Path | None) -> dict:
    """Serve `glb` beside three.js, load and render it in the headless browser, and take the
    report the page posts back (in real time: headless Chromium's virtual time skips ahead while
    the page waits on a decoding texture)."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as site:
        site = Path(site)
        (site / "index.html").write_text(PAGE.replace("SIZE_PX", str(SIZE)))
        shutil.copyfile(glb, site / "model.glb")
        (site / "three").symlink_to(THREE.resolve())
        reports: queue.Queue[bytes] = queue.Queue()
        handler = functools.partial(Handler, reports, directory=str(site))
        with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
            flags = ["--headless", "--no-sandbox", "--use-angle=swiftshader"]
            flags += ["--enable-unsafe-swiftshader", f"--user-data-dir={site / 'profile'}"]
            # A session of its own, so that the browser and its helpers end together.
            browsing = subprocess.Popen(
                [browser, *flags, url],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            try:
                body = reports.get(timeout=TIMEOUT)
            except queue.Empty:
                body = None
            finally:
                os.killpg(browsing.pid, signal.SIGTERM)
                stderr = browsing.communicate(timeout=30)[1].decode(errors="replace")
                server.shutdown()
    if body is None:
        error = f"no report in {TIMEOUT} s"
        return {"file": str(glb), "ok": False, "error": error, "stderr": stderr[-2000:]}
    report = json.loads(body)
    png = report.pop("png", None)
    if png and screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
        shot = screenshots / f"{glb.stem}.png"
        shot.write_bytes(base64.b64decode(png.split(",", 1)[1]))
        report["screenshot"] = str(shot)
    report["file"] = str(glb)
    report["ok"] = (
        "error" not in report
        and report["meshes"] > 0
        and report["covered"] > 0.01
        and report["nearBlack"] < 0.5
        and sum(report["mean"]) > 60
    )
    return report


class Handler(SimpleHTTPRequestHandler):
    """Files from the site folder; the page's POST /report goes to `reports`."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def __init__(self, reports: queue.Queue, *args, **kwargs):
        self.reports = reports
        super().__init__(*args, **kwargs)

    def do_POST(self):
        self.reports.put(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format, *args):
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help=".glb files")
    p.add_argument("--screenshots", type=Path, help="write each render here as NAME.png")
    args = p.parse_args()
    if not (THREE / "build" / "three.module.js").is_file():
        sys.exit(f"three.js is not installed at {THREE}: cd tools && npm install")
    browser = chromium()
    reports = [check(f, browser, args.screenshots) for f in args.files]
    for report in reports:
        print(json.dumps(report))
    sys.exit(0 if all(r["ok"] for r in reports) else 1)


if __name__ == "__main__":
    main()
