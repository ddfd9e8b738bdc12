"""The one configuration file: its tables, loading it (secrets included) and checking it.

A config is read once and validated completely: every problem is reported in one pass, with
the file, the key path (list entries by id) and what is wrong in a plain sentence; the
cross-checks such as duplicate ids run on a repaired copy next to the key errors. Secret
values never appear in an error: a problem with a secret names the environment variable or
the file it was meant to come from. What a fleet needs beyond a valid file (people, keys, no
placeholders) is bot.config_check's.

The modules, by job:
- values: the value types (durations as `timedelta`, quiet hours, latency, secrets, roles)
  and `Section`, the base of every table with its checks between keys;
- agents, mail, operations, model: the tables (model holds the root, `Config`);
- secrets: `${VAR}` and `<key>_file`;
- loading: the file, its TOML, and every problem in one pass;
- semantics: the checks across tables;
- problems, walk: pydantic's errors in the config's words, and the repaired copy.
Every public name is importable from `bot.config`.
"""

from bot.config.agents import (
    WORKSPACE_ROOT,
    AgentConfig,
    CodingCli,
    ExecPolicy,
    FolderConfig,
    FolderMode,
    PipelineConfig,
    PipelineStep,
    QueueConfig,
)
from bot.config.loading import (
    DEFAULT_CONFIG_PATH,
    Checked,
    ConfigError,
    load_config,
    read_config,
    validate_config,
)
from bot.config.mail import (
    GraphMailbox,
    GraphOptions,
    HimalayaMailbox,
    HimalayaOptions,
    MailboxConfig,
    TriageConfig,
)
from bot.config.model import (
    BOT_TOKEN,
    AnthropicConfig,
    AnthropicProfile,
    BudgetConfig,
    Config,
    DatabaseConfig,
    Feed,
    Feeds,
    NodeConfig,
    Person,
    Price,
    RuntimeConfig,
    TelegramConfig,
)
from bot.config.operations import (
    AlertingConfig,
    ApprovalsConfig,
    CheckConfig,
    DeployConfig,
    PublishTarget,
    Severity,
    WatchdogConfig,
    WebConfig,
    WebSource,
)
from bot.config.values import (
    MAX_DURATION,
    NODE_NAME,
    Duration,
    Latency,
    QuietHours,
    QuietRange,
    Role,
    Secret,
    Section,
    at_most,
    duration_text,
    parse_duration,
    parse_latency,
)

__all__ = [
    "BOT_TOKEN",
    "DEFAULT_CONFIG_PATH",
    "MAX_DURATION",
    "NODE_NAME",
    "WORKSPACE_ROOT",
    "AgentConfig",
    "AlertingConfig",
    "AnthropicConfig",
    "AnthropicProfile",
    "ApprovalsConfig",
    "BudgetConfig",
    "CheckConfig",
    "Checked",
    "CodingCli",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "DeployConfig",
    "Duration",
    "ExecPolicy",
    "Feed",
    "Feeds",
    "FolderConfig",
    "FolderMode",
    "GraphMailbox",
    "GraphOptions",
    "HimalayaMailbox",
    "HimalayaOptions",
    "Latency",
    "MailboxConfig",
    "NodeConfig",
    "Person",
    "PipelineConfig",
    "PipelineStep",
    "Price",
    "PublishTarget",
    "QueueConfig",
    "QuietHours",
    "QuietRange",
    "Role",
    "RuntimeConfig",
    "Secret",
    "Section",
    "Severity",
    "TelegramConfig",
    "TriageConfig",
    "WatchdogConfig",
    "WebConfig",
    "WebSource",
    "at_most",
    "duration_text",
    "load_config",
    "parse_duration",
    "parse_latency",
    "read_config",
    "validate_config",
]
