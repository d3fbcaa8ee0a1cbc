"""Finish the reference environment after its pip installs (``make venv-ref`` runs this
with the environment's own Python, then ``tiny_hub.py``).

PyPI has no CPU build of torchaudio or torchvision for the CPU torch 2.13.0 this machine
installs from disk, and the owners' packages import both at import time (laion_clap:
torchvision in ``clap_module/transform.py``; msclap: torchaudio in ``CLAPWrapper.py``).
Neither compiled part is used by what the reference tests call, so:

- torchaudio 2.11.1: its compiled libraries link ``libc10_cuda.so``, which the CPU torch
  lacks; without them ``torchaudio._extension`` finds no library and torchaudio imports as
  Python (its transforms and functional API work; ``torchaudio.load`` would need torchcodec,
  which nothing here calls). The libraries are removed.
- torchvision 0.28.0: its ``_meta_registrations.py`` registers fake kernels for the
  ``torchvision::nms`` and ``qnms`` operators, which its CUDA ``_C.so`` would have defined;
  a ``.pth`` hook defines the two schemas before torchvision is first imported, so its
  Python parts import (its compiled operators stay unavailable).

Then it imports what the tests need and says so, failing loudly otherwise.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

HOOK = '''"""clapkit's reference environment: define torchvision's nms/qnms operator schemas before
torchvision is imported (its CUDA _C.so cannot load beside the CPU torch); see
tests/reference/install.py in clapkit."""
import importlib.abc
import sys


class _Schemas(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" and not getattr(self, "done", False):
            self.done = True
            import torch

            try:
                torch.ops.torchvision.nms
            except (AttributeError, RuntimeError):
                lib = torch.library.Library("torchvision", "DEF")
                lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                self.lib = lib  # kept alive with the finder
        return None


sys.meta_path.insert(0, _Schemas())
'''


def main() -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    for name in ("_torchaudio.so", "libtorchaudio.so", "torchaudio_prefixctc.so"):
        (site / "torchaudio" / "lib" / name).unlink(missing_ok=True)
    (site / "clapkit_reference_torchvision.py").write_text(HOOK)
    (site / "clapkit_reference_torchvision.pth").write_text("import clapkit_reference_torchvision\n")
    # a new interpreter, which reads the .pth at start
    check = "import torchaudio, torchvision, msclap; from transformers import GPT2LMHeadModel, RobertaModel"
    subprocess.run([sys.executable, "-c", check], check=True)
    print(f"reference environment ready: {sys.prefix}")


if __name__ == "__main__":
    main()
