"""The official Python client's stream() and portforward() against kcore (argv[1]: kubeconfig)."""

import hashlib
import struct
import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()

# output split and the exit code from the error channel's Status
resp = stream(api.connect_get_namespaced_pod_exec, "p", "default", container="c",
              command=["sh", "-c", "echo out; echo err >&2; exit 3"],
              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
resp.run_forever(timeout=30)
out, err = resp.read_stdout(), resp.read_stderr()
assert out == "out\n", repr(out)
assert err == "err\n", repr(err)
assert resp.returncode == 3, resp.returncode

# the preloaded form
out = stream(api.connect_get_namespaced_pod_exec, "p", "default", container="c",
             command=["echo", "hi"], stderr=True, stdin=False, stdout=True, tty=False)
assert out == "hi\n", repr(out)

# stdin, written as text messages, ended with the v5 close signal
resp = stream(api.connect_get_namespaced_pod_exec, "p", "default", container="c",
              command=["cat"], stderr=True, stdin=True, stdout=True, tty=False,
              _preload_content=False)
resp.write_stdin("hello\n")
got = ""
while resp.is_open() and got != "hello\n":
    resp.update(timeout=5)
    got += resp.read_stdout()
assert got == "hello\n", repr(got)
resp.close_channel(0)
resp.run_forever(timeout=30)
assert resp.returncode == 0, resp.returncode

# port-forward: the v4 channel framing, two channels per port
pf = portforward(api.connect_get_namespaced_pod_portforward, "p", "default", ports="8080,9")
sock = pf.socket(8080)
sock.setblocking(True)
data = bytes(range(256)) * 4096
sock.sendall(struct.pack(">Q", len(data)) + data)
back = b""
while len(back) < 32 + len(data):
    chunk = sock.recv(65536)
    if not chunk:
        break
    back += chunk
assert len(back) == 32 + len(data), len(back)
assert back[:32] == hashlib.sha256(data).digest()
assert back[32:] == data
sock.close()

# nothing listens on the pod's port 9: the error channel says so
s9 = pf.socket(9)
s9.setblocking(True)
try:
    while s9.recv(1024):
        pass
except OSError:
    pass
error = pf.error(9)
assert error is not None and "error forwarding port 9 to pod p" in error, repr(error)
pf.close()

print("STREAM-OK")
