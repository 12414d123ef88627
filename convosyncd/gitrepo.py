"""GitPython, held to the rules every other git call follows.

GitPython reads a repository's files by itself (its config, its ``.git`` pointer), and
runs git for everything else. Every command it runs for a repository opened here goes
through :func:`convosyncd.gitcmd.run_git`: the same time limit, the same environment in
which git can never prompt, the same options that keep the person's hooks and automatic
gc out. GitPython itself runs ``git version`` once when first imported, to find git;
that needs no repository and no network, so it can neither prompt nor hang.

Imported only by what needs it (``convosyncd add``): GitPython is slow to import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import git as gitpython

from convosyncd.gitcmd import LOCAL_TIMEOUT, run_git

_PLAIN_CALL_ONLY = ("as_process", "with_extended_output", "output_stream", "istream")


class RuledGit(gitpython.Git):
    """GitPython's command runner, running each command through :func:`run_git`."""

    timeout: float = LOCAL_TIMEOUT

    def execute(self, command: Any, **options: Any) -> Any:  # type: ignore[override]
        """Run ``command`` (``[git, subcommand, ...]``) and return its output as text.

        Only GitPython's plain calls are supported (text out, no streams): convosyncd
        makes no other kind, and a mode this does not honour must not pass silently.
        """
        unsupported = sorted(name for name in _PLAIN_CALL_ONLY if options.get(name))
        if unsupported:
            raise TypeError(f"GitPython call modes not supported here: {', '.join(unsupported)}")
        argv = [str(part) for part in ([command] if isinstance(command, str) else command)]
        executable = self.GIT_PYTHON_GIT_EXECUTABLE or "git"
        if argv and os.path.basename(argv[0]) == os.path.basename(executable):
            argv = argv[1:]  # run_git names git itself
        folder = Path(self._working_dir) if self._working_dir else Path.cwd()
        return run_git(argv, cwd=folder, timeout=self.timeout).text


class RuledRepo(gitpython.Repo):
    """A GitPython repository whose git commands all run through :class:`RuledGit`."""

    GitCommandWrapperType = RuledGit


InvalidRepository = (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError)
"""What opening a folder that is no repository raises."""
