"""Training: shared run utilities (:mod:`.common`) and recipes (:mod:`.clap`)."""
