"""Inside a session whose controlling terminal is a pseudo-terminal, prints whether the
launcher counts a Ctrl-C as already delivered to a child in the terminal's foreground
group, then to a child in a session of its own: ``True False`` is right."""

import os
import pty
import subprocess
import sys

pid, terminal = pty.fork()
if pid == 0:
    from waddle.compat.launch import _terminal_sent_it

    wait = [sys.executable, "-c", "import signal; signal.pause()"]
    children = [subprocess.Popen(wait), subprocess.Popen(wait, start_new_session=True)]
    print(*(_terminal_sent_it(child.pid) for child in children), flush=True)
    for child in children:
        child.kill()
        child.wait()
    os._exit(0)
output = b""
while True:
    try:
        chunk = os.read(terminal, 1024)
    except OSError:  # EIO: the session's side of the terminal has closed
        break
    if not chunk:
        break
    output += chunk
os.waitpid(pid, 0)
print(output.decode().strip().splitlines()[-1])
