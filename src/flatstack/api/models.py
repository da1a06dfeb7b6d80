"""Request bodies (pydantic): unknown fields are refused, every error names its field."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flatstack.api.units import parse_size
from flatstack.errors import ConfigError


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRequest(_Body):
    """``POST /v1/containers``: mirrors ``engine.containers.RunOptions``."""

    image: str = Field(min_length=1, description="Image reference; pulled when missing.")
    command: list[str] | None = Field(None, description="Replaces the image's Cmd.")
    entrypoint: list[str] | None = Field(None, description="Replaces the image's "
                                         "Entrypoint ([] clears it).")
    name: str | None = None
    env: list[str] = Field(default_factory=list, description="KEY=VALUE entries.")
    ports: list[str] = Field(default_factory=list, description="[IP:]HOST:CTR[/tcp|udp].")
    volumes: list[str] = Field(default_factory=list, description="/host:/ctr[:ro] or "
                               "name:/ctr[:ro].")
    memory: int | str | None = Field(None, description="Bytes, or a size such as 512m.")
    cpus: float | None = Field(None, gt=0, description="CPU quota in cores.")
    pids_limit: int | None = Field(None, gt=0)
    network: str = Field("bridge", min_length=1, description="none, host, bridge or a "
                         "network name.")
    user: str | None = None
    workdir: str | None = None
    hostname: str | None = None
    tty: bool = False
    interactive: bool = False
    remove: bool = Field(False, description="--rm: removed when it exits.")
    labels: dict[str, str] = Field(default_factory=dict)
    console_socket: str | None = Field(None, description="With tty: a unix socket on "
                                       "this host where the pty master is sent.")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse_size(value)
        except ConfigError as err:
            raise ValueError(err.reason) from None

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class ExecRequest(_Body):
    """``POST /v1/containers/{ref}/exec``: mirrors ``engine.containers.ExecOptions``."""

    command: list[str] = Field(min_length=1)
    env: list[str] = Field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    tty: bool = False
    detach: bool = False
    console_socket: str | None = Field(None, description="With tty: where the pty master "
                                       "is sent.")

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        return RunRequest._workdir(value)


class PullRequest(_Body):
    """``POST /v1/images/pull``."""

    ref: str = Field(min_length=1)
    platform: str | None = Field(None, description="os/arch[/variant]; default linux/amd64.")
    ca_file: str | None = Field(None, description="PEM CA bundle on the daemon's host.")
    insecure: bool = Field(False, description="Allow plain http and unverified TLS.")
    unpack: bool = True


class ImportRequest(_Body):
    """``POST /v1/images/import``: a path on the daemon's host."""

    path: str = Field(min_length=1)
    name: str | None = None
    platform: str | None = None


def to_dataclass(model: BaseModel, cls: type, field: str = "body") -> Any:
    """Build the engine's dataclass from a request; a set field it lacks is refused."""
    known = {f.name for f in dataclasses.fields(cls)}
    values = model.model_dump()
    for key in model.model_fields_set - known:
        if values[key] not in (None, False, [], {}):
            raise ConfigError(key, "not supported by this engine")
    return cls(**{k: v for k, v in values.items() if k in known})
