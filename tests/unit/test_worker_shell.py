"""The worker's ``!cmd`` / ``x = !cmd``: IPython's expansion, ipykernel's shell, terminal, merging and exit codes."""

from __future__ import annotations

import os
import signal
import shutil
import threading
from pathlib import Path

import pytest
from IPython.utils.text import DollarFormatter

from mini_magic.worker.shell import SList, WorkerShell, default_login_shell, exit_code, expand, shell_path
from tests.polling import wait_until

NAMESPACE = {"who": "world", "num": 3, "lst": [1, 2, 3, 4], "d": {"k": "v"}}
COMMANDS = [
    "echo $$", "kill -TERM $$", "echo $$who", "echo $who", "echo '$who'", "echo \"$who\" 'x'", "echo {num*2}",
    "echo {lst[1:3]}", "echo {who!r}", "echo ${who}", "echo $HOME", "echo $0", "echo {{num}}", "echo $d",
    "echo {d['k']}", "echo $who $num", "ls {nope}", "echo $nope $who", "echo {num:>5}", "a=$(echo x); echo $a",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_expansion_is_ipythons(command):
    """What IPython's ``var_expand`` does: DollarFormatter, and the raw command when that fails."""
    try:
        expected = DollarFormatter().vformat(command, args=[], kwargs=dict(NAMESPACE))
    except Exception:  # noqa: BLE001 - var_expand's fallback
        expected = command
    assert expand(command, {**NAMESPACE, "__builtins__": __builtins__}) == expected


def test_the_shell_is_ipythons_choice(tmp_path: Path):
    """$SHELL, else sh, on PATH; a shell that is not there is IPython's OSError."""
    path = os.environ["PATH"]
    assert shell_path({"SHELL": "/bin/sh", "PATH": path}) == "/bin/sh"
    assert os.path.basename(shell_path({"SHELL": "bash", "PATH": path})) == "bash"
    (tmp_path / "sh").symlink_to("/bin/sh")
    (tmp_path / "bash").symlink_to(shutil.which("bash"))
    assert shell_path({"PATH": str(tmp_path)}) == str(tmp_path / "sh")
    with pytest.raises(OSError, match='"/no/such/shell" shell not found'):
        shell_path({"SHELL": "/no/such/shell", "PATH": path})


def test_a_container_without_shell_gets_bash_and_a_set_shell_is_kept(tmp_path: Path):
    (tmp_path / "bash").symlink_to(shutil.which("bash"))
    environ = {"PATH": str(tmp_path)}
    default_login_shell(environ)
    assert environ["SHELL"] == str(tmp_path / "bash")
    environ = {"PATH": str(tmp_path), "SHELL": "/bin/zsh"}
    default_login_shell(environ)
    assert environ["SHELL"] == "/bin/zsh"
    environ = {"PATH": str(tmp_path / "nowhere")}
    default_login_shell(environ)
    assert "SHELL" not in environ


def test_exit_codes_follow_ipython():
    assert [exit_code(c) for c in (0, 3, 128, 130, -15)] == [0, 3, 128, -2, -15]


def run(source: str) -> dict:
    namespace = {"get_ipython": WorkerShell().get_ipython, **NAMESPACE}
    # exec of a compiled code object, as the worker runs cells: a KeyboardInterrupt leaving exec() of a *string*
    # marks the interpreter as interrupted (CPython's run_mod), and pytest then exits 130 at the end, tests passed.
    exec(compile(source, "<cell>", "exec"), namespace)  # noqa: S102 - a transformed cell
    return namespace


def test_system_runs_on_a_terminal_with_stderr_merged(capsys, monkeypatch):
    monkeypatch.setenv("SHELL", "bash")
    namespace = run("get_ipython().system('echo {who}; echo err >&2; [[ -t 0 && -t 2 ]] && stty size; exit 5')")
    assert capsys.readouterr() == ("world\r\nerr\r\n24 80\r\n", "")
    assert namespace["_exit_code"] == 5


def test_getoutput_merges_stderr_on_pipes_and_leaves_the_exit_code(capsys):
    namespace = run("x = get_ipython().getoutput('echo out; echo err >&2; test -t 1 || echo piped; exit 4')")
    assert isinstance(namespace["x"], SList) and namespace["x"] == ["out", "err", "piped"]
    assert "_exit_code" not in namespace
    assert capsys.readouterr() == ("", "")


def test_a_command_ending_in_ampersand_is_refused():
    for call in ("system", "getoutput"):
        with pytest.raises(OSError, match="Background processes not supported."):
            run(f"get_ipython().{call}('sleep 1 &')")


def test_an_interrupt_types_ctrl_c_shows_what_follows_and_raises(tmp_path: Path, capsys):
    ready = tmp_path / "ready"
    main = threading.get_ident()
    sender = threading.Thread(
        target=lambda: wait_until(ready.exists, 30) and signal.pthread_kill(main, signal.SIGINT), daemon=True)
    sender.start()
    with pytest.raises(KeyboardInterrupt):
        run(f"get_ipython().system(\"trap 'echo got-int; exit 7' INT; echo started; touch {ready}; sleep 30 & wait\")")
    sender.join()
    assert capsys.readouterr().out.replace("^C", "") == "started\r\ngot-int\r\n"


def test_slist_arrives_as_ipythons():
    import pickle

    from IPython.utils.text import SList as IPythonSList

    back = pickle.loads(pickle.dumps(SList(["a", "b"])))
    assert type(back) is IPythonSList and back == ["a", "b"]
