"""--visdom True against a real visdom server started on localhost, and one
warning (training goes on) when no server answers."""
import json
import os
import socket
import subprocess
import sys
import time
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


def wait_port(port, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


@pytest.fixture
def visdom_server(tmp_path):
    port = free_port()
    code = ("import sys; sys.argv=['visdom','-port','%d','-env_path','%s']; "
            "from visdom.server.run_server import main; main()" % (port, tmp_path / 'env'))
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_port(port, proc), 'the visdom server did not start'
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
