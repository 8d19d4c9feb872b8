"""Engine room: the only code that sees parsed flags. ``cli`` (the helpers
the four scripts share: str2bool, --cuda and the device rule, --dataset, the
exit wrapper), ``run_config`` (train.py's flags resolved once into a
RunConfig), ``trainer`` (train.py), ``evaluator`` (eval.py) and ``tester``
(test.py)."""
