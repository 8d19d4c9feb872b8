"""Load a top-level script (train.py, eval.py, test.py) as a module in a test,
so that its ``main(argv)`` can be called in-process."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name):
    spec = importlib.util.spec_from_file_location(f'{name}_script', os.path.join(ROOT, f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
