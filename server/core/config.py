"""One settings object for every process (house rule 9).

Every ``LUNGCDS_*`` setting of the architecture spec lives here.  Values come, in order of
precedence, from keyword arguments, the environment (prefix ``LUNGCDS_``), an optional TOML file
(``--config``) and the defaults.  The defaults are the embedded mode: SQLite and a Celery broker
on kombu's SQLAlchemy transport, both under ``data_dir``, so a fresh machine needs no service.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:  # torch and the networks load only where models run, not with the settings
    from models.runtime import ModelProvider
    from models.stoic.ensemble import EnsembleConfig

__all__ = ["Settings", "load_settings", "OUTPUT_KINDS"]

#: Report objects a destination can receive: the SR, the SEG and the encapsulated PDF.
OUTPUT_KINDS: tuple[str, ...] = ("sr", "seg", "pdf", "sc", "kos")

CommaList = Annotated[list[str], NoDecode]
_STOIC_FIELDS = ("stoic_covid_members", "stoic_severe_members")


def _split_commas(value: Any) -> Any:
    """Accept ``"A,B"`` from the environment as well as a list from TOML."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Configuration of a lungcds process (SCP + API host, or worker)."""

    model_config = SettingsConfigDict(env_prefix="LUNGCDS_", extra="forbid")

    data_dir: Path = Field(Path("lungcds-data"), description="Spool, results, weights, embedded DB/broker")
    database_url: str = Field("", description="SQLAlchemy URL; empty = SQLite under data_dir")
    broker_url: str = Field("", description="Celery broker URL; empty = embedded (SQLite under data_dir)")
    ae_title: str = Field("LUNGCDS", max_length=16)
    bind_host: str = Field("0.0.0.0", description="Interface for the DICOM SCP and the REST API")
    dicom_port: int = Field(11112, ge=0, le=65535)
    api_port: int = Field(8080, ge=0, le=65535)
    allowed_calling_aets: CommaList = Field(default_factory=list, description="Empty = any calling AE")
    destinations: CommaList = Field(
        default_factory=list,
        description="Comma separated: AET@host:port (C-STORE), NAME@stow+https://host/base (STOW-RS to that DICOMweb "
        "base URL) or NAME@return-to-sender (whoever sent the series, through sender_addresses)",
    )
    sender_addresses: dict[str, str] = Field(
        default_factory=dict,
        description="Where a return-to-sender destination sends, per origin of the series: its calling AE title, or "
        'for STOW-RS its sender (apikey:<id>, oidc:<subject>), e.g. {"CT1": "CT1@10.0.0.5:104"}; an origin not '
        "listed gets nothing (the delivery is refused with that reason)",
    )
    dicomweb_allowed_senders: CommaList = Field(
        default_factory=list,
        description="Who may send over STOW-RS (apikey:<id>, oidc:<subject>); empty = any authenticated caller",
    )
    max_stow_request_mb: int = Field(
        2048, ge=1, description="Largest STOW-RS request body (MiB), streamed to disk part by part"
    )
    dicomweb_credentials: dict[str, str] = Field(
        default_factory=dict,
        description="Per STOW-RS destination name, bearer:<token> or basic:<user>:<password> (secret)",
    )
    dicomweb_ca: Path | None = Field(
        None, description="CA bundle verifying https STOW-RS destinations (default: the system's)"
    )
    retrieve_sources: CommaList = Field(
        default_factory=list, description="PACS (AET@host:port) an admin may retrieve studies from (C-GET/C-MOVE)"
    )
    destination_outputs: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            'Per destination AE title, the outputs it receives, e.g. {"PACS": ["sr", "pdf"]}; default all: '
            "sr, seg, pdf (encapsulated), sc (key-image Secondary Capture), kos (Key Object Selection)"
        ),
    )
    max_slice_thickness_mm: float = Field(3.0, gt=0)
    series_idle_seconds: float = Field(60.0, gt=0)
    rules_file: Path | None = Field(None, description="Eligibility rules (TOML); default data_dir/rules.toml")
    min_free_disk_mb: int = Field(512, ge=0, description="The SCP answers 'out of resources' below this")
    max_request_body_kb: int = Field(
        1024, ge=1, description="Largest request body the API reads (KiB); larger ones are refused with 413"
    )
    max_weights_upload_mb: int = Field(
        2048, ge=1, description="Largest weights file PUT /models/{name}/weights accepts (MiB), streamed to disk"
    )
    worker_concurrency: int = Field(2, ge=1)
    torch_threads: int = Field(
        0,
        ge=0,
        description="Intra-op threads (torch, SimpleITK) of each worker process; 0: CPU cores / worker concurrency",
    )
    max_associations: int = Field(
        32, ge=1, le=1000, description="Simultaneous DICOM associations accepted; more are rejected as transient"
    )
    association_request_timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Seconds a new DICOM connection has to deliver its A-ASSOCIATE-RQ (TLS handshake included); "
        "silent connections are closed after it and never hold an association slot",
    )
    max_pending_connections_per_peer: int = Field(
        8,
        ge=1,
        le=1000,
        description="Connections one address may hold open before its A-ASSOCIATE-RQ; its oldest is closed beyond",
    )
    storage_commitment: bool = Field(
        True,
        description="Accept DICOM Storage Commitment (Push Model, PS3.4 Annex J) as SCP; results go back on the "
        "requesting association, else to the requester's address in sender_addresses",
    )
    priority_calling_aets: CommaList = Field(
        default_factory=list, description="Calling AE titles whose series are analysed before routine ones"
    )
    priority_accession_pattern: str | None = Field(
        None, description="Regular expression on the Accession Number marking STAT orders, e.g. ^STAT"
    )
    notify_not_analysed: bool = Field(
        True,
        description="Send a short SR and PDF saying a chest CT was not analysed, and why, when it fails the "
        "eligibility rules (never for other series; server.routing.notice)",
    )
    analysis_time_limit_s: int = Field(
        4 * 3600, ge=60, description="Hard time limit of one analysis; the job fails with this reason after it"
    )
    job_lease_s: int = Field(
        120,
        ge=5,
        description="Seconds a running analysis holds its job (renewed every third of it); the job of a lost "
        "worker is taken over by the redelivered message once this has run out",
    )
    lost_job_after_s: int = Field(
        600,
        ge=5,
        description="A queued job whose message is older than this while the analysis queue is empty is sent again "
        "(its message was lost, e.g. in a broker restart without persistence)",
    )
    worker_max_memory_mb: int = Field(
        0, ge=0, description="Replace a worker child after a task left it above this resident memory; 0: no ceiling"
    )
    delivery_max_backoff_seconds: float = Field(
        600.0, gt=0, description="Longest wait between two attempts of a report delivery or a result notification"
    )
    notify_webhook_urls: CommaList = Field(
        default_factory=list,
        description="http(s) URLs that get a signed JSON POST when a series is done, not analysable, failed or "
        "rejected (server.notifications)",
    )
    notify_webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the webhooks' X-Lungcds-Signature; required with notify_webhook_urls"
    )
    notify_webhook_patient_id: bool = Field(
        False, description="Put the Patient ID and its issuer in webhooks (minimum necessary: off by default)"
    )
    notify_fhir_base_url: str | None = Field(
        None, description="FHIR R4 server base URL: a transaction Bundle (DiagnosticReport, Observations) is POSTed"
    )
    notify_fhir_token: SecretStr | None = Field(None, description="Bearer token for the FHIR server, if it needs one")
    notify_fhir_patient_system: str | None = Field(
        None,
        description="URI of the site's Patient ID namespace, the system of the FHIR subject identifier; "
        "unset: the identifier names the DICOM Issuer of Patient ID as its assigner only",
    )
    notify_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Seconds one notification request may take before it is retried"
    )
    public_api_url: str | None = Field(
        None,
        description="Our API's address as receivers reach it (e.g. https://lungcds.hospital.local:8080), for the "
        "links in notifications; unset: links are paths under /api/v1",
    )
    dicom_tls_certificate: Path | None = Field(None, description="PEM certificate of our SCP (enables TLS)")
    dicom_tls_private_key: Path | None = Field(None, description="PEM private key of that certificate")
    dicom_tls_ca: Path | None = Field(None, description="CA bundle that signs trusted peers (clients and PACS)")
    dicom_tls_require_client_certificate: bool = False
    dicom_tls_destinations: CommaList = Field(
        default_factory=list, description="AE titles of destinations reached over TLS (verified with dicom_tls_ca)"
    )
    uncompressed_destinations: CommaList = Field(
        default_factory=list,
        description="AE titles of destinations that get the SEGs decoded (Explicit VR Little Endian), not JPEG 2000",
    )
    api_tls_certificate: Path | None = Field(None, description="PEM certificate for HTTPS on the API port")
    api_tls_private_key: Path | None = None
    oidc_issuer: str | None = Field(None, description="Accept JWT bearer tokens of this issuer (iss)")
    oidc_audience: str | None = Field(None, description="Required audience (aud) of those tokens")
    oidc_jwks_file: Path | None = Field(None, description="The issuer's JSON Web Key Set, exported to a file")
    oidc_role_claim: str = "roles"
    oidc_admin_values: CommaList = Field(default_factory=lambda: ["lungcds-admin"])
    oidc_viewer_values: CommaList = Field(default_factory=lambda: ["lungcds-viewer"])
    retention_days: int = Field(
        0, ge=0, description="Remove images and results this many days after analysis and delivery; 0 keeps them"
    )
    audit_repository: str | None = Field(
        None, description="ATNA audit repository for DICOM audit messages: udp://, tcp:// or tls://host:port"
    )
    demo_weights: bool = Field(
        False, description="Run learned models without installed weights on generated weights (marked unvalidated)"
    )
    lesion_model: Literal["nnunet", "resnet18_unet"] = Field(
        "nnunet", description="Lesion network the installed `lesions` weights are for"
    )
    device: str = Field("cpu", description="Torch device of the analysis workers, e.g. cpu or cuda")
    warm_up: bool = Field(
        True,
        description="Each worker runs one weight-free analysis of a small phantom at start, so the first study is not "
        "slower than the rest",
    )
    keep_models_loaded: bool | None = Field(
        None,
        description=(
            "Keep every learned model in memory between jobs (true), or load each for its stage and free it after "
            "(false); unset: kept on a GPU, freed on the CPU, where the default ensemble's weights alone are about 4 GB"
        ),
    )
    # Thesis Table 4.1, "Top three ensemble": the three best solutions per output, equal weights.
    stoic_covid_members: dict[str, float] = Field(
        default_factory=lambda: {"stoic_simonj": 1.0, "stoic_flyingbird": 1.0, "stoic_hal9000": 1.0},
        description="STOIC2021 members averaged for P(COVID-19), with weights (JSON object)",
    )
    stoic_severe_members: dict[str, float] = Field(
        default_factory=lambda: {"stoic_code1055": 1.0, "stoic_simonj": 1.0, "stoic_flyingbird": 1.0},
        description="STOIC2021 members averaged for P(severe), with weights (JSON object)",
    )
    log_level: str = "INFO"
    log_json: bool | None = Field(
        None, description="JSON lines (true) or readable lines (false); unset: readable on a terminal, else JSON"
    )
    console_session_minutes: int = Field(
        30,
        ge=1,
        le=720,
        description="A console session ends after this many minutes without a request (and after 12 h in any case)",
    )

    _split = field_validator(
        "notify_webhook_urls",
        "allowed_calling_aets",
        "destinations",
        "dicomweb_allowed_senders",
        "retrieve_sources",
        "dicom_tls_destinations",
        "uncompressed_destinations",
        "oidc_admin_values",
        "oidc_viewer_values",
        "priority_calling_aets",
        mode="before",
    )(_split_commas)

    @field_validator("priority_accession_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        """A STAT pattern that is not a regular expression is refused at start, not at the first series."""
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"priority_accession_pattern is not a regular expression: {exc}") from exc
        return value or None

    @field_validator("notify_webhook_urls", "notify_fhir_base_url", "public_api_url")
    @classmethod
    def _http_urls(cls, value: Any) -> Any:
        """A receiver is an absolute http(s) URL: anything else would fail only at the first finished series."""
        for url in value if isinstance(value, list) else [value] if value else []:
            if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url):
                raise ValueError(f"{url!r} is not an absolute http:// or https:// URL")
        return value or ([] if isinstance(value, list) else None)

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Settings:
        """Every webhook is signed, so receivers can refuse forgeries: URLs without a secret are refused."""
        secret = self.notify_webhook_secret.get_secret_value() if self.notify_webhook_secret else ""
        if self.notify_webhook_urls and not secret:
            raise ValueError("notify_webhook_urls needs notify_webhook_secret (the key the webhooks are signed with)")
        return self

    @field_validator("ae_title")
    @classmethod
    def _ae_title_is_valid(cls, value: str) -> str:
        """PS3.5 6.2: an AE title is 1-16 characters of the default repertoire, no backslash."""
        stripped = value.strip()
        if not stripped or "\\" in stripped or not stripped.isascii():
            raise ValueError(f"invalid AE title {value!r}")
        return stripped

    @model_validator(mode="after")
    def _outputs_name_known_destinations(self) -> Settings:
        """Every key of ``destination_outputs`` is a destination's AE title; values are output kinds."""
        titles = {entry.split("@", 1)[0].strip() for entry in self.destinations}
        for title, outputs in self.destination_outputs.items():
            if title not in titles:
                raise ValueError(f"destination_outputs names {title!r}, which is not in destinations")
            unknown = sorted(set(outputs) - set(OUTPUT_KINDS))
            if unknown:
                raise ValueError(f"destination_outputs[{title!r}] has unknown outputs {unknown}; use {OUTPUT_KINDS}")
        return self

    @field_validator("dicomweb_credentials")
    @classmethod
    def _credentials_have_a_kind(cls, value: dict[str, str]) -> dict[str, str]:
        """Each credential is a bearer token or a basic user and password (its value never in the message)."""
        for name, credential in value.items():
            kind, _, secret = credential.partition(":")
            user, _, password = secret.partition(":")
            if not (kind == "bearer" and secret) and not (kind == "basic" and user and password):
                raise ValueError(f"dicomweb_credentials[{name!r}] must be bearer:<token> or basic:<user>:<password>")
        return value

    @field_validator("sender_addresses")
    @classmethod
    def _sender_addresses_are_addresses(cls, value: dict[str, str]) -> dict[str, str]:
        """Every sender's address is a C-STORE or STOW-RS destination (not another return-to-sender)."""
        from server.routing.destinations import parse_address

        for origin, address in value.items():
            try:
                parsed = parse_address(address)
            except ValueError as exc:
                raise ValueError(f"sender_addresses[{origin!r}]: {exc}") from exc
            if parsed.kind == "return-to-sender":
                raise ValueError(f"sender_addresses[{origin!r}] must be an address, not return-to-sender")
        return value

    @model_validator(mode="after")
    def _tls_settings_are_complete(self) -> Settings:
        """Certificates come with their keys; TLS to destinations needs a CA to verify them."""
        pairs = (
            ("dicom_tls_certificate", "dicom_tls_private_key"),
            ("api_tls_certificate", "api_tls_private_key"),
        )
        for cert, key in pairs:
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                raise ValueError(f"{cert} and {key} must be given together")
        oidc = (self.oidc_issuer, self.oidc_audience, self.oidc_jwks_file)
        if any(v is not None for v in oidc) and not all(v is not None for v in oidc):
            raise ValueError("oidc_issuer, oidc_audience and oidc_jwks_file must be given together")
        if (self.dicom_tls_destinations or self.dicom_tls_require_client_certificate) and self.dicom_tls_ca is None:
            raise ValueError("dicom_tls_destinations and dicom_tls_require_client_certificate need dicom_tls_ca")
        return self

    @model_validator(mode="after")
    def _stoic_members_are_known(self) -> Settings:
        """The STOIC2021 ensemble lists registered members with positive weights.

        The registry (which imports torch) is consulted only for a non-default ensemble, so that
        reading the settings stays light.
        """
        defaults = {
            name: type(self).model_fields[name].get_default(call_default_factory=True) for name in _STOIC_FIELDS
        }
        if all(getattr(self, name) == value for name, value in defaults.items()):
            return self
        from models.registry import STOIC_MEMBERS

        for field_name in _STOIC_FIELDS:
            members: dict[str, float] = getattr(self, field_name)
            if not members:
                raise ValueError(f"{field_name} needs at least one member")
            unknown = sorted(set(members) - set(STOIC_MEMBERS))
            if unknown:
                raise ValueError(f"{field_name} names unknown members {unknown}; members are {list(STOIC_MEMBERS)}")
            if any(not weight > 0 for weight in members.values()):
                raise ValueError(f"{field_name} weights must be positive, got {members}")
        return self

    def stoic_ensemble(self) -> EnsembleConfig:
        """The configured STOIC2021 ensemble (named stoic_top3 when it is Table 4.1's)."""
        from models.stoic.ensemble import STOIC_TOP3, EnsembleConfig

        config = EnsembleConfig("custom", self.stoic_covid_members, self.stoic_severe_members)
        same = (sorted(config.covid), sorted(config.severe)) == (sorted(STOIC_TOP3.covid), sorted(STOIC_TOP3.severe))
        return STOIC_TOP3 if same else config

    def model_provider(self, *, demo_weights: bool | None = None) -> ModelProvider:
        """The learned models of this installation (one per process; it keeps or frees models as configured)."""
        from models.runtime import ModelProvider
        from server.core.weights import AdminWeightStore

        return ModelProvider(
            AdminWeightStore(self.weights_dir),
            demo_weights=self.demo_weights if demo_weights is None else demo_weights,
            device=self.device,
            lesion_kind=self.lesion_model,
            stoic_config=self.stoic_ensemble(),
            keep_loaded=self.keep_models_loaded,
        )

    def outputs_for(self, destination: str) -> tuple[str, ...]:
        """The output kinds ``destination`` (``AET@host:port``) receives."""
        title = destination.split("@", 1)[0].strip()
        return tuple(self.destination_outputs.get(title, OUTPUT_KINDS))

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        """Derive the embedded database and broker URLs from ``data_dir``."""
        data_dir = self.data_dir.expanduser().resolve()
        object.__setattr__(self, "data_dir", data_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data_dir / 'lungcds.db'}")
        if not self.broker_url:
            object.__setattr__(self, "broker_url", f"sqla+sqlite:///{data_dir / 'broker.db'}")
        if self.rules_file is None:
            object.__setattr__(self, "rules_file", data_dir / "rules.toml")
        return self

    @property
    def embedded(self) -> bool:
        """True when neither the database nor the broker is an external service."""
        return self.database_url.startswith("sqlite") and self.broker_url.startswith("sqla+sqlite")

    @property
    def spool_dir(self) -> Path:
        """Where received instances are written, ``spool/<study>/<series>/<sop>.dcm``."""
        return self.data_dir / "spool"

    @property
    def commitment_dir(self) -> Path:
        """Storage Commitment requests whose result is not yet delivered, one file each."""
        return self.data_dir / "storage-commitment"

    @property
    def results_dir(self) -> Path:
        """Where each series' result.json and report objects are written."""
        return self.data_dir / "results"

    @property
    def weights_dir(self) -> Path:
        """Installed model weights (``lungcds models install``)."""
        return self.data_dir / "weights"

    def as_environment(self) -> dict[str, str]:
        """These settings as ``LUNGCDS_*`` variables, for child processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, dict):
                text = json.dumps(value)
            elif isinstance(value, list):
                text = ",".join(value)
            else:
                text = str(value)
            env[f"LUNGCDS_{name.upper()}"] = text
        return env


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, optionally layered over a TOML file.

    The environment wins over the file so that an operator can override one value of a
    shared configuration file on one host.
    """
    if config_file is None:
        return Settings(**overrides)
    if not config_file.is_file():
        raise FileNotFoundError(f"configuration file {config_file} does not exist")

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                TomlConfigSettingsSource(settings_cls, toml_file=config_file),
                file_secret_settings,
            )

    return _FileSettings(**overrides)
