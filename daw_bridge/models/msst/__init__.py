"""The Music-Source-Separation-Training (MSST) model family: BS-RoFormer, Mel-Band RoFormer,
SCNet and MDX23C, written here with MSST's parameter names so its public checkpoints load
with ``strict=True``, and inference that matches MSST's ``demix``."""
