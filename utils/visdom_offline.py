"""Fill visdom's static folder from the npm registry, so that
``python -m visdom.server`` starts and serves its page without internet.

On its first start, visdom 0.2.4's ``download_scripts``
(``visdom/server/build.py``) fetches its JavaScript, CSS and fonts from
unpkg.com, cdn.plot.ly, d3js.org and cdnjs (MathJax), and hangs or fails
behind a firewall. Every one of those files is a file of a versioned npm
package; this tool takes each with ``npm pack PACKAGE@VERSION`` (npm checks
the registry's integrity hash), copies the exact file to the name visdom
gives it, and writes ``static/version.built`` the way ``download_scripts``
checks it, so visdom never tries to download again.

It also makes the page load with tornado >= 6.6: visdom's ``index.html``
links the user stylesheet with ``static_url("../user/style.css")``, and
tornado 6.6 refuses (HTTP 403) any ``static_url`` outside the static folder,
so the page itself answered 403. The link is rewritten to the same URL
without asking ``static_url`` (``<static prefix>../user/style.css``, which
the browser resolves to ``/user/style.css``, served by visdom's
UserSettingsHandler). That keeps tornado's path check instead of pinning an
older tornado without it.

Usage (``make visdom`` runs it; ``make test`` and ``make demo`` too)::

    python -m utils.visdom_offline            # fill, or say it is already filled
    python -m utils.visdom_offline --check    # exit 1 unless filled and patched

Without npm it prints one line and exits 1; nothing else depends on it.
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

VISDOM_VERSION = '0.2.4'

# (npm package@version, file inside the package, where visdom 0.2.4 puts it
# under static/, the URL its download_scripts fetches it from).
FILES = [
    ('jquery@3.1.1', 'dist/jquery.min.js', 'js/jquery.min.js',
     'https://unpkg.com/jquery@3.1.1/dist/jquery.min.js'),
    ('bootstrap@3.3.7', 'dist/js/bootstrap.min.js', 'js/bootstrap.min.js',
     'https://unpkg.com/bootstrap@3.3.7/dist/js/bootstrap.min.js'),
    ('react@16.2.0', 'umd/react.production.min.js', 'js/react-react.min.js',
     'https://unpkg.com/react@16.2.0/umd/react.production.min.js'),
    ('react-dom@16.2.0', 'umd/react-dom.production.min.js', 'js/react-dom.min.js',
     'https://unpkg.com/react-dom@16.2.0/umd/react-dom.production.min.js'),
    ('react-modal@3.1.10', 'dist/react-modal.min.js', 'js/react-modal.min.js',
     'https://unpkg.com/react-modal@3.1.10/dist/react-modal.min.js'),
    # cdn.plot.ly/plotly-2.11.1.min.js is plotly.js 2.11.1's dist/plotly.min.js,
    # published alone as plotly.js-dist-min
    ('plotly.js-dist-min@2.11.1', 'plotly.min.js', 'js/plotly-plotly.min.js',
     'https://cdn.plot.ly/plotly-2.11.1.min.js'),
    ('sjcl@1.0.7', 'sjcl.js', 'js/sjcl.js',
     'https://unpkg.com/sjcl@1.0.7/sjcl.js'),
    ('layout-bin-packer@1.4.0', 'dist/layout-bin-packer.js.map', 'js/layout-bin-packer.js.map',
     'https://unpkg.com/layout-bin-packer@1.4.0/dist/layout-bin-packer.js.map'),
    # d3js.org/d3.v3.min.js is the last d3 3.x release
    ('d3@3.5.17', 'd3.min.js', 'js/d3.v3.min.js',
     'http://d3js.org/d3.v3.min.js'),
    # d3js.org/d3-selection-multi.v1.js is the last 1.x release
    ('d3-selection-multi@1.0.1', 'build/d3-selection-multi.js', 'js/d3-selection-multi.v1.js',
     'https://d3js.org/d3-selection-multi.v1.js'),
    ('save-svg-as-png@1.4.17', 'lib/saveSvgAsPng.js', 'js/saveSvgAsPng.js',
     'https://unpkg.com/save-svg-as-png@1.4.17/lib/saveSvgAsPng.js'),
    ('react-resizable@1.4.6', 'css/styles.css', 'css/react-resizable-styles.css',
     'https://unpkg.com/react-resizable@1.4.6/css/styles.css'),
    ('react-grid-layout@0.16.3', 'css/styles.css', 'css/react-grid-layout-styles.css',
     'https://unpkg.com/react-grid-layout@0.16.3/css/styles.css'),
    ('bootstrap@3.3.7', 'dist/css/bootstrap.min.css', 'css/bootstrap.min.css',
     'https://unpkg.com/bootstrap@3.3.7/dist/css/bootstrap.min.css'),
    # unpkg answers a bare package@version with the package's "main" file
    ('classnames@2.2.5', 'index.js', 'fonts/classnames',
     'https://unpkg.com/classnames@2.2.5'),
    ('layout-bin-packer@1.4.0', 'dist/layout-bin-packer.js', 'js/layout_bin_packer.js',
     'https://unpkg.com/layout-bin-packer@1.4.0/dist/layout-bin-packer.js'),
] + [
    ('bootstrap@3.3.7', f'dist/fonts/glyphicons-halflings-regular.{ext.split("#")[0]}',
     f'fonts/glyphicons-halflings-regular.{ext}',
     f'https://unpkg.com/bootstrap@3.3.7/dist/fonts/glyphicons-halflings-regular.{ext}')
    for ext in ('eot', 'woff2', 'woff', 'ttf', 'svg#glyphicons_halflingsregular')
] + [
    # bootstrap.css asks for the SVG font without the #fragment; visdom saves
    # it only under the name with the fragment
    ('bootstrap@3.3.7', 'dist/fonts/glyphicons-halflings-regular.svg',
     'fonts/glyphicons-halflings-regular.svg', None),
]

# MathJax 2.7.5 from cdnjs: visdom fetches these eight files into
# static/js/mathjax/2.7.5/; the npm package holds the same tree.
MATHJAX = 'mathjax@2.7.5'
MATHJAX_DIR = 'js/mathjax/2.7.5'
MATHJAX_FILES = ['config/Safe.js', 'config/TeX-AMS-MML_HTMLorMML.js', 'extensions/Safe.js',
                 'jax/output/SVG/fonts/TeX/fontdata.js', 'jax/output/SVG/jax.js',
                 'jax/output/SVG/fonts/TeX/Size1/Regular/Main.js', 'jax/output/SVG/config.js',
                 'MathJax.js']

BAD_LINK = '{{ static_url("../user/style.css") }}'
GOOD_LINK = '"{{ handler.settings[\'static_url_prefix\'] }}../user/style.css"'


def visdom_dir():
    """visdom's package folder (found without importing visdom)."""
    spec = importlib.util.find_spec('visdom')
    if spec is None or spec.origin is None:
        raise FileNotFoundError('visdom is not installed (pip install --no-build-isolation '
                                f'visdom=={VISDOM_VERSION})')
    return os.path.dirname(spec.origin)


def visdom_version(pkg):
    """The version visdom compares ``static/version.built`` with."""
    try:
        with open(os.path.join(pkg, 'VERSION')) as f:
            return f.read().strip()
    except OSError:
        return 'no_version_file'


def wanted():
    """Every (package, file in package, destination under static/)."""
    out = [(spec, src, dst) for spec, src, dst, _ in FILES]
    out += [(MATHJAX, f, f'{MATHJAX_DIR}/{f}') for f in MATHJAX_FILES]
    return out


def missing(static):
    """What is not there yet: destination names, 'version.built', 'index.html'."""
    out = [dst for _, _, dst in wanted() if not os.path.isfile(os.path.join(static, dst))]
    built = os.path.join(static, 'version.built')
    version = visdom_version(os.path.dirname(static))
    if not os.path.isfile(built) or open(built).read().strip() != version:
        out.append('version.built')
    index = os.path.join(static, 'index.html')
    if os.path.isfile(index) and BAD_LINK in open(index).read():
        out.append('index.html')
    return out


def _write_atomic(data, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def npm_pack(specs, workdir, npm='npm'):
    """``npm pack`` every spec into ``workdir`` in one call (npm checks each
    tarball against the registry's integrity hash) and extract them.
    Returns {spec: package root folder}."""
    r = subprocess.run([npm, 'pack', *specs, '--pack-destination', workdir, '--json',
                        '--fetch-retries', '1', '--fetch-timeout', '60000'],
                       capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or [f'exit status {r.returncode}'])[-1]
        raise RuntimeError(f'npm pack failed: {msg}')
    try:
        packed = json.loads(r.stdout)
    except ValueError:
        raise RuntimeError('npm pack --json printed no JSON') from None
    roots = {}
    for spec, info in zip(specs, packed):
        if info.get('id') != spec:
            raise RuntimeError(f'npm pack {spec} answered {info.get("id")}')
        dest = os.path.join(workdir, spec.replace('/', '_'))
        with tarfile.open(os.path.join(workdir, info['filename'])) as t:
            t.extractall(dest, filter='data')
        tops = os.listdir(dest)      # one top folder, ``package/`` for most
        if len(tops) != 1:
            raise RuntimeError(f'npm pack {spec}: unexpected tarball layout {tops}')
        roots[spec] = os.path.join(dest, tops[0])
    if len(roots) != len(specs):
        raise RuntimeError(f'npm pack returned {len(roots)} of {len(specs)} packages')
    return roots


def fill(static, npm='npm', log=print):
    """Fill ``static`` (visdom's static folder) and patch its index.html.
    Nothing is written unless every file was found."""
    todo = wanted()
    specs = list(dict.fromkeys(s for s, _, _ in todo))
    log(f'visdom offline: npm pack {" ".join(specs)}')
    data = {}
    with tempfile.TemporaryDirectory(prefix='visdom-npm-') as work:
        roots = npm_pack(specs, work, npm)
        for spec, src, dst in todo:
            path = os.path.join(roots[spec], src)
            if not os.path.isfile(path):
                raise RuntimeError(f'{spec} has no file {src}')
            with open(path, 'rb') as f:
                data[dst] = f.read()
    for dst, content in data.items():
        _write_atomic(content, os.path.join(static, dst))
    index = os.path.join(static, 'index.html')
    with open(index) as f:
        html = f.read()
    if BAD_LINK in html:
        _write_atomic(html.replace(BAD_LINK, GOOD_LINK).encode(), index)
    # last, the mark download_scripts checks: static/version.built == visdom.__version__
    _write_atomic(visdom_version(os.path.dirname(static)).encode(),
                  os.path.join(static, 'version.built'))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--check', action='store_true',
                   help='only check; exit 1 when something is missing')
    p.add_argument('--npm', default='npm', help='the npm executable')
    args = p.parse_args(argv)
    try:
        static = os.path.join(visdom_dir(), 'static')
    except FileNotFoundError as e:
        print(f'visdom offline: {e}', file=sys.stderr)
        return 1
    todo = missing(static)
    if not todo:
        print(f'visdom offline: {static} is filled (visdom {visdom_version(os.path.dirname(static))})')
        return 0
    if args.check:
        print(f'visdom offline: {static} lacks {len(todo)} file(s), e.g. {todo[0]} '
              '(run `make visdom`)', file=sys.stderr)
        return 1
    if shutil.which(args.npm) is None:
        print('visdom offline: npm not found, so visdom\'s static files were not filled; '
              '`python -m visdom.server` will try to download them (install npm, then `make visdom`)',
              file=sys.stderr)
        return 1
    try:
        fill(static, args.npm)
    except (RuntimeError, OSError) as e:
        print(f'visdom offline: {e}', file=sys.stderr)
        return 1
    print(f'visdom offline: filled {static} ({len(wanted())} files from npm); '
          '`python -m visdom.server` now runs without internet')
    return 0


if __name__ == '__main__':
    sys.exit(main())
