"""utils.visdom_offline: its table is exactly what visdom 0.2.4's
download_scripts fetches, the filled folder makes download_scripts fetch
nothing, and a missing npm is one line."""
import os
import shutil

import pytest

from utils import visdom_offline as vo

build = pytest.importorskip('visdom.server.build')


def run_download_scripts(monkeypatch, install_dir):
    """Run visdom's download_scripts with every network call refused;
    returns the URLs it tried."""
    import requests
    tried = []

    class Refuse:
        def open(self, req, *a, **k):
            tried.append(req.full_url)
            raise build.URLError('offline')

    def refuse_get(url, *a, **k):
        tried.append(url)
        raise OSError('offline')

    monkeypatch.setattr(build.request, 'build_opener', lambda *a: Refuse())
    monkeypatch.setattr(build.request, 'install_opener', lambda o: None)
    monkeypatch.setattr(requests, 'get', refuse_get)
    try:
        build.download_scripts(install_dir=str(install_dir))
    except OSError:
        pass                        # its MathJax loop does not catch errors
    return tried


def test_table_matches_download_scripts(monkeypatch, tmp_path):
    tried = run_download_scripts(monkeypatch, tmp_path)
    ours = {url for _, _, _, url in vo.FILES if url}
    assert ours == {u for u in tried if 'mathjax' not in u}
    # the first MathJax file it asks for is one of ours (it stops at the first failure)
    mathjax = [u for u in tried if 'mathjax' in u]
    assert mathjax and mathjax[0].split('2.7.5/')[1].split('?')[0] in vo.MATHJAX_FILES
    assert len(vo.MATHJAX_FILES) == 8


def test_filled_folder_downloads_nothing(monkeypatch):
    static = os.path.join(vo.visdom_dir(), 'static')
    if vo.missing(static):
        pytest.skip(f'visdom static folder not filled ({vo.missing(static)[0]}); run `make visdom`')
    assert run_download_scripts(monkeypatch, vo.visdom_dir()) == []
    html = open(os.path.join(static, 'index.html')).read()
    assert vo.BAD_LINK not in html and vo.GOOD_LINK in html


def test_without_npm_one_line(monkeypatch, tmp_path, capsys):
    pkg = tmp_path / 'visdom'
    (pkg / 'static').mkdir(parents=True)
    shutil.copy(os.path.join(vo.visdom_dir(), 'VERSION'), pkg / 'VERSION')
    (pkg / 'static' / 'index.html').write_text(vo.BAD_LINK)
    monkeypatch.setattr(vo, 'visdom_dir', lambda: str(pkg))
    assert vo.main(['--check']) == 1
    capsys.readouterr()
    assert vo.main(['--npm', str(tmp_path / 'no-npm-here')]) == 1
    out, err = capsys.readouterr()
    assert out == '' and err.count('\n') == 1 and 'npm not found' in err
    assert os.listdir(pkg / 'static') == ['index.html']
