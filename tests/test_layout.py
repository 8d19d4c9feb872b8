"""One concept, one place: checked on the source tree itself."""
import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('train', 'eval', 'test')
LIBRARY = ('utils', 'data', 'layers')


def python_files(*folders):
    for folder in folders or ('.',):
        for root, dirs, files in os.walk(os.path.join(ROOT, folder)):
            dirs[:] = [d for d in dirs if not d.startswith('.') and d not in (
                'runs', 'weights', '__pycache__', 'node_modules')]
            for f in files:
                if f.endswith('.py'):
                    yield os.path.join(root, f)


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def test_exactly_one_str2bool():
    where = [os.path.relpath(p, ROOT) for p in python_files()
             if re.search(r'^\s*def str2bool\b', read(p), re.M)]
    assert where == [os.path.join('utils', 'engine', 'cli.py')]


def imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.Call) and getattr(node.func, 'id', '') == '__import__' \
                and node.args and isinstance(node.args[0], ast.Constant):
            yield node.args[0].value


def test_library_never_imports_a_script():
    bad = []
    for path in python_files(*LIBRARY):
        for name in imported_modules(ast.parse(read(path), path)):
            if name.split('.')[0] in SCRIPTS:
                bad.append(f'{os.path.relpath(path, ROOT)} imports {name}')
    assert bad == []


def test_scripts_are_main_argv_and_exit_only_under_main():
    for rel in ('train.py', 'eval.py', 'test.py', os.path.join('demo', 'live.py')):
        tree = ast.parse(read(os.path.join(ROOT, rel)))
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == 'main']
        assert len(mains) == 1, rel
        args = mains[0].args
        assert [a.arg for a in args.args] == ['argv'] and \
            isinstance(args.defaults[0], ast.Constant) and args.defaults[0].value is None, rel
        guard = [n for n in tree.body if isinstance(n, ast.If)
                 and '__main__' in ast.unparse(n.test)]
        assert len(guard) == 1 and ast.unparse(guard[0].body[0]).strip() == 'sys.exit(main())', rel
        outside = [n for n in tree.body if n is not guard[0]]
        exits = [n for top in outside for n in ast.walk(top) if isinstance(n, ast.Call)
                 and ast.unparse(n.func) in ('sys.exit', 'exit', 'quit', 'os._exit')]
        assert exits == [], rel
