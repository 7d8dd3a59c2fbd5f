"""One place for configuration: `Settings`, read from `LOOPLINE_*` environment variables.

Entry points (CLI, flows, the API, the app) build a `Settings()` and pass it down; library code
never reads the environment itself. Nothing is created on import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Runtime configuration of a loopline installation.

    Every path defaults to a place under `home` so one folder holds a whole installation.
    """

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_", extra="ignore")

    home: Path = Field(default=Path("data"), description="Data home: lake, stores, logs.")
    database_url: str | None = Field(
        default=None, description="Metadata store URL; default SQLite under home."
    )
    use_case: str = Field(default="fraud", description="Use case spec name or YAML path.")
    feature_repo: Path = Field(
        default=PROJECT_ROOT / "feature_repo", description="Feast repository folder."
    )
    project_dir: Path = Field(default=PROJECT_ROOT, description="Checkout holding flows/.")
    host: str = "127.0.0.1"
    api_port: int = 8000
    app_port: int = 8501
    prefect_port: int = 4200
    work_pool: str = "loopline"
    sqlite_busy_timeout_ms: int = 30_000
    model_refresh_s: float = Field(default=2.0, gt=0, description="Champion re-check period.")
    require_api_keys: bool = Field(
        default=False,
        description="Refuse prediction requests without a valid API key even with no key "
        "created yet (always the case on a non-loopback bind).",
    )
    max_body_bytes: int = Field(
        default=1 << 20, gt=0, description="Largest request body the service reads (413 above)."
    )
    api_key_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified (or refused) API key is trusted without the store; "
        "a revocation takes effect within this time (0: check the store every request).",
    )
    feast_yaml: str = Field(
        default="feature_store.yaml",
        pattern=r"^[A-Za-z0-9_.-]+\.ya?ml$",
        description="Feast config in the feature repo: feature_store.yaml (embedded) or "
        "feature_store.scale.yaml (Redis online store, PostgreSQL registry).",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis of the scale profile's online store."
    )
    feast_registry_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the scale profile's Feast registry."
    )
    feast_project: str = Field(
        default="loopline",
        pattern=r"^[A-Za-z0-9_]+$",
        description="Feast project of the scale profile (one per installation sharing servers).",
    )
    prediction_spool_dir: Path | None = Field(
        default=None,
        description="Local folder of the prediction log's write-ahead spool; default "
        "`_spool` inside the log table (set it when the lake is on object storage).",
    )
    prediction_flush_s: float = Field(
        default=1.0, gt=0, description="Longest time a logged prediction waits in the spool."
    )
    prediction_batch_rows: int = Field(
        default=5000, gt=0, description="Spooled predictions that trigger a commit right away."
    )
    prediction_spool_max_bytes: int = Field(
        default=256 << 20,
        gt=0,
        description="Uncommitted spool bytes above which predictions are refused (503).",
    )
    prediction_fsync: bool = Field(
        default=False,
        description="fsync each logged prediction (survives power loss, not only a crash).",
    )

    @field_validator("home", "feature_repo", "project_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def metadata_url(self) -> str:
        """SQLAlchemy URL of the metadata store."""
        return self.database_url or f"sqlite:///{self.home / 'loopline.db'}"

    @property
    def lake_dir(self) -> Path:
        """Root of the Delta tables."""
        return self.home / "lake"

    @property
    def artifacts_dir(self) -> Path:
        """Root of the content-addressed artifact store."""
        return self.home / "artifacts"

    @property
    def raw_dir(self) -> Path:
        """Where the demo generator writes raw input files."""
        return self.home / "raw"

    @property
    def features_dir(self) -> Path:
        """Parquet exports of feature tables read by Feast's offline store."""
        return self.home / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and online store (embedded profile)."""
        return self.home / "feast"

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of the processes `loopline up` starts."""
        return self.home / "run"

    @property
    def prediction_log_dir(self) -> Path:
        """The prediction log: a Delta table of the lake, written by the API."""
        return self.lake_dir / "predictions"

    @property
    def prefect_api_url(self) -> str:
        """URL of the Prefect server `loopline up` starts."""
        return f"http://{self.host}:{self.prefect_port}/api"

    def feast_env(self) -> dict[str, str]:
        """Environment variables `feature_repo/feature_store.yaml` expands."""
        return {"LOOPLINE_HOME": str(self.home)}
