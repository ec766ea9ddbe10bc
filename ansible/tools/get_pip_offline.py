# An offline stand-in for the get-pip script that `ansible-test` downloads to bootstrap pip in the
# virtual environments it makes (the download host is not reachable from every machine). The test
# command copies it to ~/.ansible/test/cache/get_pip_24_2.py, where ansible-test looks first: it
# installs pip from the standard library's ensurepip, then passes ansible-test's arguments (the
# pip version it wants, pip's options) to that pip, which takes them from the package index.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"],
                      stdout=subprocess.DEVNULL)
# get-pip's own options (not pip's) are dropped: --no-setuptools, --no-wheel.
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]))
