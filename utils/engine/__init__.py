"""Engine room: the only code that sees parsed flags. ``trainer`` (train.py),
``evaluator`` (eval.py), ``tester`` (test.py) and ``cli`` (the helpers the
scripts share)."""
