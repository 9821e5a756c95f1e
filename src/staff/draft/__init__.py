"""`staff draft`: a smaller same-family model made from the target (layers removed, then healed
by distillation), for families without a smaller member. See run.py."""
