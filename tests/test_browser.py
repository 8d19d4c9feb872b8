"""The visdom dashboard in a real browser: ``python -m visdom.server`` (its
static folder filled by `make visdom`, no internet), headless Chromium on the
page, ``train.py --visdom True`` sending losses; the page must load every
script and stylesheet from the local server and show the loss window with
one point per logged iteration, read from the plotly data in the page.

Chromium is driven over its DevTools protocol (websocket-client, a visdom
dependency). Set SSD_SCREENSHOT=path to keep the dashboard screenshot (the
README's doc/visdom_dashboard.png is made that way).
"""
import base64
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from test_visdom import run_visdom_server
from utils import visdom_offline

websocket = pytest.importorskip('websocket')
visdom = pytest.importorskip('visdom')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome')
                 if shutil.which(n)), None)
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage', '--remote-debugging-port=0', '--window-size=1280,720']
ITERS = 24
ENV = 'ssd_browser'
TINY = ['--dataset', 'shapes', '--batch_size', '1', '--train_images', '2', '--num_workers', '0',
        '--quiet', '--log_every', '1', '--eval_every', '0', '--max_iter', str(ITERS),
        '--save_every', str(ITERS)]

# every plotly plot on the page: title, and each trace's name, x and y
PLOTS_JS = '''Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
  title: d.layout && d.layout.title && (d.layout.title.text || d.layout.title),
  traces: (d.data || []).map(t => ({name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))}))'''


def poll(fn, timeout, what):
    """Call ``fn`` until it returns something true; fail after ``timeout`` s."""
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.1)


class Chromium:
    """Headless Chromium with one page, spoken to over the DevTools protocol.
    Every event it sends is kept in ``events``."""

    def __init__(self, profile, timeout=60):
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f'--user-data-dir={profile}',
                                      'about:blank'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.events, self._id, self.ws = [], 0, None
        active = profile / 'DevToolsActivePort'

        def port():
            if self.proc.poll() is not None:
                pytest.fail(f'chromium exited with status {self.proc.returncode}')
            text = active.read_text() if active.exists() else ''
            return text.split('\n')[0] if '\n' in text else None

        try:
            url = f'http://127.0.0.1:{poll(port, timeout, "chromium to start")}/json/list'
            with urllib.request.urlopen(url, timeout=10) as r:
                page = next(t for t in json.load(r) if t['type'] == 'page')
            self.ws = websocket.create_connection(page['webSocketDebuggerUrl'], timeout=timeout,
                                                  suppress_origin=True)
        except BaseException:
            self.close()
            raise

    def send(self, method, **params):
        self._id += 1
        self.ws.send(json.dumps({'id': self._id, 'method': method, 'params': params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == self._id:
                if 'error' in msg:
                    raise RuntimeError(f'{method}: {msg["error"]}')
                return msg.get('result', {})
            self.events.append(msg)

    def js(self, expression):
        r = self.send('Runtime.evaluate', expression=expression, returnByValue=True)
        if 'exceptionDetails' in r:
            raise RuntimeError(f'{expression}: {r["exceptionDetails"]}')
        return r['result'].get('value')

    def requests(self):
        """{requestId: dict(url, type, status, failed)} from the network events."""
        out = {}
        for e in self.events:
            p = e.get('params', {})
            if e.get('method') == 'Network.requestWillBeSent':
                out[p['requestId']] = dict(url=p['request']['url'], type=p.get('type'),
                                           status=None, failed=None)
            elif e.get('method') == 'Network.responseReceived' and p['requestId'] in out:
                out[p['requestId']]['status'] = p['response']['status']
            elif e.get('method') == 'Network.loadingFailed' and p['requestId'] in out:
                out[p['requestId']]['failed'] = p.get('blockedReason') or p.get('errorText')
        return out

    def close(self):
        if self.ws is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip('headless Chromium is not installed (apt-get install chromium)')
    static = os.path.join(visdom_offline.visdom_dir(), 'static')
    if visdom_offline.missing(static):
        pytest.skip("visdom's static folder is not filled (`make visdom`, which needs npm)")
    browser = Chromium(tmp_path / 'profile')
    try:
        yield browser
    finally:
        browser.close()


def test_dashboard_shows_the_training_losses(tmp_path, chromium):
    with run_visdom_server(tmp_path / 'env') as port:
        base = f'http://127.0.0.1:{port}'
        out = tmp_path / 'run'
        train = subprocess.Popen(
            [sys.executable, 'train.py', *TINY, '--save_folder', str(out), '--visdom', 'True',
             '--visdom_port', str(port), '--visdom_env', ENV],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            # open the dashboard on the run's environment once it exists, while training runs
            client = visdom.Visdom(port=port, env=ENV, use_incoming_socket=False)
            poll(lambda: train.poll() is not None or client.win_exists(f'{ENV}_loss', env=ENV),
                 60, 'the first points on the server')
            chromium.send('Network.enable')
            chromium.send('Page.enable')
            chromium.send('Runtime.enable')
            chromium.send('Page.navigate', url=f'{base}/env/{ENV}')
            poll(lambda: chromium.js('document.readyState') == 'complete', 30, 'the page to load')

            def loss_plot():
                plots = chromium.js(PLOTS_JS) or []
                loss = [p for p in plots if p['title'] == 'SSD training: loss']
                return loss and len(loss[0]['traces'][0]['x']) == ITERS and loss[0]
            plot = poll(loss_plot, 180, f'a loss window with {ITERS} points in the page')
            _, err = train.communicate(timeout=60)
            assert train.returncode == 0, err
        finally:
            if train.poll() is None:
                train.kill()
                train.wait()
        with open(out / 'metrics.csv', newline='') as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == ITERS
        traces = {t['name']: t for t in plot['traces']}
        assert sorted(traces) == ['loss', 'loss_c', 'loss_l']
        for name, t in traces.items():
            assert t['x'] == list(range(1, ITERS + 1))
            # metrics.csv holds 5 decimals, the page the full values
            assert t['y'] == pytest.approx([float(r[name]) for r in rows], abs=1e-5)
        # the window's title bar is in the DOM too
        assert 'SSD training: loss' in chromium.js('document.body.innerText')

        reqs = list(chromium.requests().values())
        assets = [r for r in reqs if r['type'] in ('Script', 'Stylesheet')]
        assert len([r for r in assets if r['type'] == 'Script']) >= 10
        assert len([r for r in assets if r['type'] == 'Stylesheet']) >= 5
        bad = [r for r in assets if r['status'] != 200 or r['failed']]
        assert bad == []
        errors = [e['params']['exceptionDetails'].get('text') for e in chromium.events
                  if e.get('method') == 'Runtime.exceptionThrown']
        assert errors == []                   # the page's scripts ran without an error
        outside = [r['url'] for r in reqs if r['url'].startswith('http')
                   and not r['url'].startswith(base)]
        assert outside == []                  # nothing from a CDN

        png = base64.b64decode(chromium.send('Page.captureScreenshot', format='png')['data'])
        assert png[:8] == b'\x89PNG\r\n\x1a\n'
        (tmp_path / 'visdom_dashboard.png').write_bytes(png)
        if os.environ.get('SSD_SCREENSHOT'):
            with open(os.environ['SSD_SCREENSHOT'], 'wb') as f:
                f.write(png)
