"""Checks that ``dse run`` / ``dse resume`` make before Ray starts: what a study file cannot say
about the machine it runs on.

A study file is validated when it is read (:func:`dse.study.config.load_study_config`); a valid
file may still be unrunnable here: its CIFAR or lookup folder is missing, it asks for more GPUs
(or CPUs) per trial than this machine has, or its cluster address does not answer. Each of those
would otherwise end as failed trials, or as a study that waits forever; each is refused here in
one line naming the field (or flag), before anything is created.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from dse.errors import DataError, SpecError

__all__ = ["check_address", "check_runnable", "check_storage_url"]

#: Seconds to wait for a cluster address to accept a TCP connection.
ADDRESS_TIMEOUT_S = 1.0


def check_storage_url(url: str, *, where: str) -> None:
    """An SQLAlchemy URL that parses and whose database driver is installed.

    Raises:
        SpecError: ``where: message`` in one line (``where`` names the field or flag).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect().import_dbapi()  # the dialect class alone loads without its driver
    except (ArgumentError, NoSuchModuleError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SpecError(f"{where}: {url!r} is not a usable SQLAlchemy URL ({type(err).__name__}: {first})") from None
    except ImportError as err:
        raise SpecError(f"{where}: the database driver for {url.split(':')[0]!r} is not installed ({err})") from None


def check_address(address: str, *, where: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """A Ray cluster address (``HOST:PORT`` or ``ray://HOST:PORT``) that accepts a TCP connection
    within ``timeout`` seconds (``auto`` and ``local`` are left to Ray).

    Raises:
        SpecError: The address is malformed or nothing answers there.
    """
    text = address.strip()
    if text in ("auto", "local"):
        return
    rest = text.split("://", 1)[1] if "://" in text else text
    host, sep, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SpecError(f"{where}: {address!r} is not a Ray address like HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        with socket.create_connection((host, int(port_text)), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise SpecError(f"{where}: nothing answers at {host}:{port_text} ({reason}); start the cluster with `ray start --head`") from None


def _check_resources(config: Any, *, where: str) -> None:
    """A local run (no address): each trial's CPUs and GPUs exist on this machine."""
    ex = config.execution
    if ex.gpus_per_trial > 0:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if ex.gpus_per_trial > count:
            raise SpecError(
                f"{where}: execution.gpus_per_trial: {ex.gpus_per_trial:g} GPU(s) per trial, but this machine has {count}; "
                "set gpus_per_trial: 0 or run on a cluster (--address)"
            )
    cpus = ex.num_cpus or os.cpu_count() or 1
    if ex.cpus_per_trial > cpus:
        field = "execution.num_cpus" if ex.num_cpus else "this machine"
        raise SpecError(
            f"{where}: execution.cpus_per_trial: {ex.cpus_per_trial:g} CPUs per trial, but {field} has {cpus}; no trial could start"
        )


def _check_data(config: Any, *, where: str) -> None:
    """The study's CIFAR folder (or NB201 lookup folder) holds its files."""
    if config.is_replay:
        return
    if config.is_tabular:
        root, dataset = Path(config.lookup.root), config.lookup.dataset
        if not root.is_dir():
            raise SpecError(f"{where}: lookup.root: {root} is not a folder (the published NB201 results)")
        if not (root / "meta.json").is_file():
            raise SpecError(f"{where}: lookup.root: {root / 'meta.json'} is missing")
        if not (root / dataset).is_dir():
            raise SpecError(f"{where}: lookup.dataset: {root / dataset} is not a folder")
        return
    if config.data.dataset == "digits":
        return
    from dse.data.cifar import resolve_cifar_dir

    try:
        resolve_cifar_dir(config.data.dataset, config.data.root, download=False)
    except DataError as err:
        message = str(err).replace("; pass --download (download=True) to fetch it", "").replace(" (pass root=..., with download=True to fetch it)", "")
        raise SpecError(f"{where}: data.root: {message.removeprefix('root: ')}") from None


def check_runnable(config: Any, *, where: str, address: str | None = None) -> None:
    """Everything ``dse run``/``resume`` needs from this machine, before Ray starts or a file is written.

    Args:
        config: The validated study (``StudyConfig``).
        where: The study file, for messages.
        address: The ``--address`` flag (else the file's ``execution.address``).

    Raises:
        SpecError: One line naming the field or flag.
    """
    if address:
        check_address(address, where="--address")
    elif config.execution.address:
        check_address(config.execution.address, where=f"{where}: execution.address")
    else:
        _check_resources(config, where=where)
    _check_data(config, where=where)
