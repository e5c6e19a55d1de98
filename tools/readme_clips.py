"""The README's prompt-travel and video-to-video clips from the world model.

    python tools/readme_clips.py

Writes docs/images/travel.gif (what `python -m spacetime.video --prompt-at 0 "a red circle moving
right" --prompt-at 15 "a blue circle moving right"` writes), docs/images/v2v_input.gif (a world
render of a red square moving right) and docs/images/v2v_output.gif (`python -m spacetime.video "a
blue square moving right" --init-video docs/images/v2v_input.gif --strength 0.7`), and prints what
the oracle reads in each.
"""

from __future__ import annotations

from _shared import ROOT


def main() -> None:
    from spacetime.eval.oracle import read_clip
    from spacetime.media import read_video, write_video
    from spacetime.pipelines.video import VideoPipeline
    from spacetime.world import Clip

    images = ROOT / "docs" / "images"
    pipe = VideoPipeline.from_pretrained()
    travel = pipe({0: "a red circle moving right", 15: "a blue circle moving right"}, seed=0)[0]
    write_video(images / "travel.gif", travel, 8)
    source = Clip("square", "red", "right", None, (16.0, 32.0), 10.0, 2.0).render()
    write_video(images / "v2v_input.gif", source, 8)
    source, _ = read_video(images / "v2v_input.gif")  # as the CLI reads it
    edited = pipe("a blue square moving right", video=source, strength=0.7, seed=0)[0]
    write_video(images / "v2v_output.gif", edited, 8)
    for name, clip in (("travel", travel), ("v2v input", source), ("v2v output", edited)):
        r = read_clip(clip)
        print(f"{name}: colours {[f.colour for f in r.frames]}, shape {r.shape}, {r.direction}")


if __name__ == "__main__":
    main()
