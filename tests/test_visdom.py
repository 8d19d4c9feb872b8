"""--visdom True against a real visdom server started on localhost, and one
warning (training goes on) when no server answers."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings

import pytest

import train

visdom = pytest.importorskip('visdom')

TINY = ['--dataset', 'shapes', '--batch_size', '2', '--train_images', '4',
        '--num_workers', '0', '--quiet', '--log_every', '1', '--eval_every', '0',
        '--max_iter', '2', '--save_every', '2']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_http(url, proc, timeout=60):
    """Poll ``url`` until the server answers it (any HTTP status); False when
    ``proc`` exits or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.2)
    return False


@contextlib.contextmanager
def run_visdom_server(env_path):
    """``python -m visdom.server -port P`` (ssd.pytorch's instruction) on a free
    port; yields the port. When `make visdom` has not filled visdom's static
    folder (no npm), that command would try to download its scripts, so the
    server is started without that step (the API works, the page does not)."""
    from utils.visdom_offline import missing, visdom_dir
    port = free_port()
    args = ['-port', str(port), '-env_path', str(env_path)]
    if not missing(os.path.join(visdom_dir(), 'static')):
        cmd = [sys.executable, '-m', 'visdom.server', *args]
    else:
        cmd = [sys.executable, '-c', 'import sys; from visdom.server.run_server import main; '
               f'sys.argv = ["visdom"] + {args!r}; main()']
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_http(f'http://127.0.0.1:{port}/', proc), 'the visdom server did not start'
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def visdom_server(tmp_path):
    with run_visdom_server(tmp_path / 'env') as port:
        yield port


def test_losses_arrive_on_the_server(tmp_path, visdom_server):
    env = 'ssd_test'
    assert train.main(TINY + ['--save_folder', str(tmp_path), '--visdom', 'True',
                              '--visdom_port', str(visdom_server), '--visdom_env', env]) == 0
    client = visdom.Visdom(port=visdom_server, env=env, use_incoming_socket=False)
    data = json.loads(client.get_window_data(win=f'{env}_loss', env=env))
    traces = {t['name']: t for t in data['content']['data']}
    assert set(traces) == {'loss_l', 'loss_c', 'loss'}
    assert traces['loss']['x'] == [1, 2]
    rows = (tmp_path / 'metrics.csv').read_text().splitlines()[1:]
    assert [round(y, 4) for y in traces['loss']['y']] == \
        [round(float(r.split(',')[3]), 4) for r in rows]


def test_unreachable_server_warns_once_and_trains(tmp_path):
    port = free_port()          # nothing listens there
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert train.main(TINY + ['--save_folder', str(tmp_path), '--visdom', 'True',
                                  '--visdom_port', str(port)]) == 0
    msgs = [str(x.message) for x in w if 'visdom' in str(x.message)]
    assert len(msgs) == 1 and 'training goes on' in msgs[0]
    assert os.path.isfile(tmp_path / 'checkpoint.pth')


def test_validation_metric_window(tmp_path, visdom_server, monkeypatch):
    """--eval_metric coco: the validation window plots COCO AP per evaluation."""
    import utils.evaluation.evaluate as evaluate
    values = iter([0.25, 0.5])
    monkeypatch.setattr(evaluate, 'evaluate_model',
                        lambda net, ds, metrics=('voc07',), **kw: {'coco': {'AP': next(values)}})
    env = 'ssd_metric'
    assert train.main(TINY + ['--save_folder', str(tmp_path), '--visdom', 'True',
                              '--visdom_port', str(visdom_server), '--visdom_env', env,
                              '--eval_every', '1', '--val_images', '2',
                              '--eval_metric', 'coco']) == 0
    client = visdom.Visdom(port=visdom_server, env=env, use_incoming_socket=False)
    data = json.loads(client.get_window_data(win=f'{env}_map', env=env))
    (trace,) = data['content']['data']
    assert trace['name'] == 'COCO AP'
    assert trace['x'] == [1, 2] and trace['y'] == [0.25, 0.5]
