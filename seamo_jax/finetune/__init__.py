"""End-to-end fine-tuning of the pretrained SeaMo encoder (`seamo finetune`), MAE recipe.

    run_finetune(config, checkpoint_dir, out_dir, *, sources=None, num_classes=None) -> results dict
        writes <out>/finetune_results.{json,md} (the probe's row schema, protocol "finetune_mae")
        and one resumable run dir per (input set, encoder, label fraction, seed) under <out>/runs/.

Modules: head.py (pool -> fc_norm -> linear head, losses, scores), data.py
(batches as a pure function of (seed, step)), trainer.py (sharded state,
jitted step / logits, encoder restore), run.py (runs and the sweep).
Keys and defaults: the `finetune` section of seamo_jax/experiments/base.py.
"""

from seamo_jax.finetune.run import ENCODERS, PROTOCOL, input_sets, run_finetune, sweep_axes, write_report
from seamo_jax.finetune.train_one import Preempted

__all__ = ["ENCODERS", "PROTOCOL", "Preempted", "input_sets", "run_finetune", "sweep_axes", "write_report"]
