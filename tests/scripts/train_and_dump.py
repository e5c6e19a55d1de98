"""Train a tiny config, then have every rank dump its own weights (for the data-parallel test)."""

import sys
from pathlib import Path

from accelerate import PartialState
from safetensors.torch import save_file

from spacetime.train.config import make_config
from spacetime.train.loop import train
from spacetime.train.vae import VAETask


class Recording(VAETask):
    def build(self):
        self.module = super().build()
        return self.module


out, batch = Path(sys.argv[1]), int(sys.argv[2])
cfg = make_config(
    dict(
        task="vae",
        preset="tiny",
        steps=3,
        batch_size=batch,
        checkpoint_every=3,
        threads=1,
        warmup=1,
    )
)
task = Recording(cfg)
train(cfg, task, out, resume=False, progress=False)
weights = {k: v.detach().contiguous() for k, v in task.module.state_dict().items()}
save_file(weights, str(out / f"rank{PartialState().process_index}.safetensors"))
