"""Run under ``torchrun``: the clapkit command line (the arguments after RECORD), noting
what :func:`clapkit.training.parallel.shard` left in each process in
``RECORD/shard{rank}.json``: the FSDP units, this process's parameter elements and the
whole model's (written at every phase change; the last one stays).

Usage: fsdp_worker.py RECORD ARGS...
"""

import json
import sys
from pathlib import Path

import torch

from clapkit.training import parallel


def main() -> None:
    record, args = Path(sys.argv[1]), sys.argv[2:]
    shard = parallel.shard

    def noting(model, *a, **kw):
        from torch.distributed.fsdp import FSDPModule

        out = shard(model, *a, **kw)
        params = list(model.parameters())
        (record / f"shard{torch.distributed.get_rank()}.json").write_text(json.dumps({
            "units": sum(isinstance(m, FSDPModule) for m in model.modules()),
            "local": sum(parallel.local(p).numel() for p in params), "whole": sum(p.numel() for p in params)}))
        return out

    parallel.shard = noting  # wrap_for_training looks it up when called
    from clapkit.cli.common import main as clapkit

    sys.argv = ["clapkit", *args]
    clapkit()


if __name__ == "__main__":
    main()
