"""Checkpoint export: Flax encoder safetensors, timm ViT state dict, model card.

`export(checkpoint_dir, out_dir)` (exporter.py) backs `seamo export`; `load_numpy`
(tensor_files.py) reads the files back with numpy + safetensors only.
"""


def __getattr__(name):
    if name == "export":
        from seamo_jax.export.exporter import export
        return export
    if name == "load_numpy":
        from seamo_jax.export.tensor_files import load_numpy
        return load_numpy
    raise AttributeError(f"module 'seamo_jax.export' has no attribute {name!r}")
