"""Train under a config, SIGKILL-ing this process right after the step checkpoint of
(epoch index, batch in epoch) is on disk, as a crash or an OOM killer would.

Usage: kill_worker.py CONFIG_YAML OUT_DIR EPOCH BATCH
"""

import os
import signal
import sys

from clapkit.config import load_config
from clapkit.training.clap import ClapTrainer
from clapkit.training.loop import Loop


def main() -> None:
    cfg_path, out, epoch, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    save = Loop.save

    def save_then_die(self, improved):
        save(self, improved)
        if (self.state["window"], self.state["step_in_window"]) == (epoch, batch):
            os.kill(os.getpid(), signal.SIGKILL)

    Loop.save = save_then_die
    ClapTrainer(load_config(cfg_path), out).fit()


if __name__ == "__main__":
    main()
