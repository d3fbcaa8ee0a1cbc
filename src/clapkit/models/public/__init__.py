"""Public dual encoders behind clapkit's interface: transformers' ClapModel, CLIPModel and
SiglipModel (:mod:`.hf`) and open_clip models (:mod:`.open_clip`), on one base (:mod:`.base`)."""
