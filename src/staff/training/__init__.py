"""Training, shared by every stage that trains or scores: batching (``batching``), the
per-sample response loss (``losses``) and LoRA fine-tuning (``lora``). Fine-tuning (stages
train-*), evaluation, scoring and draft healing import it; it imports nothing of theirs."""
