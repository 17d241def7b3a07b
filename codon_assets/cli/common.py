"""What every command shares: the one-line error, the instance home, host and path checks."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from codon_assets.settings import PROJECT_ROOT, dagster_home


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def ensure_instance_home() -> Path:
    """Point DAGSTER_HOME at `.dagster_home/` unless set, and give it the project's dagster.yaml."""
    home = dagster_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a folder not writable
        raise CliError(f"DAGSTER_HOME {home}: cannot be the instance folder ({exc.strerror})") from None
    os.environ["DAGSTER_HOME"] = str(home)
    config = home / "dagster.yaml"
    if not config.exists() and (PROJECT_ROOT / "dagster.yaml").exists():
        try:
            config.symlink_to(PROJECT_ROOT / "dagster.yaml")
        except FileExistsError:  # a command started at the same moment on the same new home made it first
            pass
    return home


def bare_name(path: Path) -> str:
    """The file name without its input ending: Sac.tsv.gz -> Sac, Human.fa.gz -> Human."""
    from codon_assets.core.hosts import input_suffix

    return path.name[: -len(suffix)] if (suffix := input_suffix(path.name)) else path.stem


def resolve_host(path: Path, host: str | None, host_data: bool = True) -> str:
    """The host of an input file: ``host`` (--host) when given, else the one its name or folder names.
    ``host_data``: the file holds the host's own records (run, predict), which --host must not file under
    another host than the name says; target proteins (design) may be designed for any host."""
    from codon_assets.core.hosts import HOSTS_BY_KEY, host_for_filename

    named = host_for_filename(path.name) or HOSTS_BY_KEY.get(path.parent.name)
    if host:
        if host not in HOSTS_BY_KEY:
            raise CliError(f"unknown host {host!r}; choose one of {', '.join(HOSTS_BY_KEY)}", code=2)
        if host_data and named is not None and named.key != host:
            raise CliError(f"{path.name} is named for host {named.key} but --host is {host}: its records would be "
                           f"stored as {host}'s; drop --host, or rename the file if it really holds {host}", code=2)
        return host
    if named is None:
        from codon_assets.core.hosts import HOSTS

        aliases = ", ".join(f"{a} ({h.key})" for h in HOSTS for a in h.file_aliases)
        raise CliError(f"cannot tell the host of {path.name}: pass --host, or name the file {aliases}", code=2)
    return named.key


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` if needed and prove a file can be written there, before any work starts."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{path}: exists and is not a directory", code=2)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CliError(f"{path}: cannot write there ({exc.strerror or exc})", code=2) from None


def ensure_writable_file(path: Path, inputs: tuple[Path, ...] = ()) -> None:
    """An output file the command may create or replace: not a directory, in a writable directory, and none
    of the command's ``inputs`` (writing it would destroy what is being read)."""
    if path.is_dir():
        raise CliError(f"{path}: is a directory; name an output file", code=2)
    refuse_overwriting_inputs([path], inputs)
    ensure_writable_dir(path.parent)


def refuse_overwriting_inputs(outputs: list[Path], inputs: tuple[Path, ...]) -> None:
    """One line, before any work, when an output would replace one of the inputs (same file, any path) or a
    file inside an input folder (a folder of proteins, a saved model)."""
    for output in outputs:
        for source in inputs:
            try:
                same = output.exists() and source.exists() and os.path.samefile(output, source)
                inside = output.exists() and source.is_dir() and output.resolve().is_relative_to(source.resolve())
            except OSError:
                same = inside = False
            if same or inside:
                raise CliError(f"{output}: {'is the input' if same else 'is inside the input folder'} {source}; "
                               "writing it would destroy the input: name another output", code=2)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def transfer_quality(metrics: dict[str, float], prefix: str = "") -> str:
    """How well a transfer model ranks a host it has no labels of (``core.transfer.leave_one_host_out``)."""
    if f"{prefix}transfer_spearman" not in metrics:
        return "how well it ranks a new host is not measured (fewer than two measured hosts to leave out)"
    return (f"on a measured host left out of its training it ranks with Spearman "
            f"{metrics[f'{prefix}transfer_spearman']:.2f} (mean over {int(metrics[f'{prefix}transfer_hosts'])} hosts, "
            f"lowest {metrics[f'{prefix}transfer_spearman_min']:.2f})")

