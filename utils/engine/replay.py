"""A training run's ``config.json``: written into ``--save_folder`` when the
run starts, replayed by ``python train.py --config FOLDER/config.json [flags]``.

What the file holds (``FORMAT``, version 1):

- ``argv``: train.py's own flags as given (the tokens), ``command``: the
  whole command line (``sys.argv``);
- ``settings``: every flag of ``train.py`` after resolution (the
  :class:`~utils.engine.run_config.RunConfig`; tuples as lists), ``derived``:
  what resolution adds beside the flags (``val_splits``);
- ``model``: the model config the run built (backbone, size, priors,
  preprocessing: ``Run.cfg``), ``schedule``: the learning-rate schedule;
- ``versions`` (python, torch, torchvision, CUDA, cuDNN), ``git_commit``
  (None outside a git checkout), ``created`` (UTC), ``replayed_from``.

A replay parses the recorded ``argv`` followed by the new flags (the last
spelling of a flag wins), so the flags given now override the record. A
default that resolves differently now than it did for the record (another
version of the code) is pinned to the recorded value, except those of the
machine: ``--cuda``/``--device``, ``--threads``, ``--num_workers`` and
``--dataset_root`` are resolved again here. A replay into the recorded run's
own folder (``--save_folder`` not changed) continues that run from its
``checkpoint.pth`` when there is one (``--resume`` given now decides
otherwise); ``--save_folder NEW`` replays it from the start. The save
folder's lock (``utils.training.lock``) keeps a replay out of a folder whose
run is still going.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

FORMAT = 'ssd.pytorch-train-config'
VERSION = 1
FILE = 'config.json'
KEYS = ('format', 'version', 'argv', 'command', 'settings', 'derived', 'model', 'schedule',
        'versions', 'git_commit', 'created', 'replayed_from')
#: Flags whose default belongs to the machine: resolved again on replay.
MACHINE = ('cuda', 'device', 'threads', 'num_workers', 'dataset_root')
#: Where a run starts, not a default: never pinned (a continued run's record
#: replayed elsewhere starts from the start).
START = ('resume', 'start_iter')
#: Settings never recorded or replayed.
SKIP = ('config',)


class ConfigError(ValueError):
    """A ``--config`` file that is not ours or cannot be replayed (one line)."""


def _plain(v):
    """JSON-able: tuples as lists, anything else odd as its str."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def flag_dests(parser):
    """The dests of ``parser``'s flags (no --help), in order."""
    return [a.dest for a in parser._actions if a.dest != 'help']


def given_flags(parser_factory, argv):
    """The flags ``argv`` gives explicitly: {dest: parsed value}, parsed once
    by a parser whose defaults are all suppressed."""
    p = parser_factory()
    for a in p._actions:
        a.default, a.required = argparse.SUPPRESS, False
    return vars(p.parse_known_args(list(argv))[0])     # unknown ones: see _parse


def versions():
    """python, torch, torchvision, CUDA (None: a CPU build) and cuDNN."""
    import torch
    import torchvision
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {'python': sys.version.split()[0], 'torch': torch.__version__,
            'torchvision': torchvision.__version__, 'cuda': torch.version.cuda,
            'cudnn': cudnn}


def git_commit(root=None):
    """``git rev-parse HEAD`` of the project (None when not a git checkout,
    no git, or any failure)."""
    root = root or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and len(sha) == 40 else None


def record(config, parser, model=None, schedule=None):
    """The ``config.json`` dict of the resolved RunConfig ``config``
    (``config.argv``: its flags as given), the model config and schedule."""
    dests = [d for d in flag_dests(parser) if d not in SKIP]
    settings = {d: _plain(getattr(config, d, None)) for d in dests}
    return {'format': FORMAT, 'version': VERSION,
            'argv': list(getattr(config, 'argv', None) or []), 'command': list(sys.argv),
            'settings': settings,
            'derived': {'val_splits': _plain(getattr(config, 'val_splits', ()))},
            'model': _plain(model), 'schedule': _plain(schedule),
            'versions': versions(), 'git_commit': git_commit(),
            'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'replayed_from': getattr(config, 'replayed_from', None)}


def write(config, parser, model=None, schedule=None):
    """Write ``<save_folder>/config.json`` atomically; return its path."""
    from utils.checkpoint import atomic_write_text
    path = os.path.join(config.save_folder, FILE)
    text = json.dumps(record(config, parser, model, schedule), indent=1, sort_keys=False)
    atomic_write_text(text + '\n', path)
    return path


def read(path, parser):
    """The checked ``config.json`` dict at ``path``; ConfigError (one line)
    when it is not ours or has keys this train.py does not know."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except OSError as e:
        raise ConfigError(f'--config {path}: {e.strerror or e}') from None
    except ValueError as e:
        raise ConfigError(f'--config {path}: not JSON ({e})') from None
    if not isinstance(rec, dict) or rec.get('format') != FORMAT:
        raise ConfigError(f'--config {path}: not a train.py config.json (no "format": '
                          f'"{FORMAT}")')
    if rec.get('version') != VERSION:
        raise ConfigError(f'--config {path}: version {rec.get("version")!r}, this train.py '
                          f'reads version {VERSION}')
    unknown = [k for k in rec if k not in KEYS]
    dests = set(flag_dests(parser))
    unknown += [f'settings.{k}' for k in rec.get('settings') or {} if k not in dests]
    if unknown:
        raise ConfigError(f'--config {path}: unknown keys: {", ".join(unknown)}')
    if not isinstance(rec.get('argv', []), list) or not isinstance(rec.get('settings', {}), dict):
        raise ConfigError(f'--config {path}: "argv" must be a list and "settings" an object')
    return rec


def _value(v):
    return tuple(_value(x) for x in v) if isinstance(v, list) else v


def _parse(parser_factory, argv, path):
    p = parser_factory()
    args, extra = p.parse_known_args(argv)
    if extra:
        raise ConfigError(f'--config {path}: unknown flags: {" ".join(extra)}')
    return args


def replay(path, argv, parser_factory, resolve):
    """The RunConfig of ``train.py --config path ARGV``: the recorded flags,
    then ``argv`` (its --config removed) over them, recorded defaults pinned
    where they would now resolve differently (see the module docstring)."""
    import warnings
    rec = read(path, parser_factory())
    old = [str(t) for t in rec.get('argv') or []]
    if '--config' in old or any(t.startswith('--config=') for t in old):
        raise ConfigError(f'--config {path}: its "argv" holds --config')
    new = _drop_config(list(argv))
    now = given_flags(parser_factory, new)
    with warnings.catch_warnings():       # the record as it resolves today
        warnings.simplefilter('ignore')
        today = resolve(_parse(parser_factory, old, path))
        given0 = given_flags(parser_factory, old)
    settings = rec.get('settings') or {}
    pins = {k: _value(v) for k, v in settings.items()
            if k not in given0 and k not in now and k not in MACHINE + START + SKIP
            and _plain(getattr(today, k, None)) != v}
    args = _parse(parser_factory, old + new, path)
    if 'cuda' in now or 'device' in now:  # the device asked for now replaces the recorded one
        args.cuda, args.device = now.get('cuda'), now.get('device')
    for k, v in pins.items():
        setattr(args, k, v)
    folder = os.path.dirname(os.path.abspath(path))
    ckpt = os.path.join(args.save_folder, 'checkpoint.pth')
    if 'resume' not in now and os.path.isdir(args.save_folder) and \
            os.path.samefile(args.save_folder, folder) and os.path.isfile(ckpt):
        args.resume = ckpt
        if int(os.environ.get('RANK', '0')) == 0:
            print(f'train.py: --config {path}: continuing {ckpt} (a replay into its own '
                  'folder continues it; --save_folder NEW replays it from the start)',
                  file=sys.stderr)
    c = resolve(args)
    c.argv, c.replayed_from = old + new, os.path.abspath(path)
    return c


def _drop_config(argv):
    out, skip = [], False
    for t in argv:
        if skip:
            skip = False
        elif t == '--config':
            skip = True
        elif not t.startswith('--config='):
            out.append(t)
    return out
