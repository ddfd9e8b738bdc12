"""The checks across tables: what no single table can know alone (duplicate ids, names of
agents, folders, feeds, profiles and owners used elsewhere, reporting cycles, crontab lines
in the configured zone, workspace folders on disk). Checks within one table are that
table's `cross_problems`.

Each function returns problems with positional key paths ("agents[1].cron: ..."); the loader
names entries by id and leaves out what follows from a key already reported.
"""

from __future__ import annotations

from collections.abc import Iterator

from agents.catalog import authorities, tool_names
from bot.config.agents import WORKSPACE_ROOT, AgentConfig
from bot.config.model import Config
from bot.config.values import Role
from bot.cron import crontab_trigger


def semantic_problems(config: Config) -> list[str]:
    """Every problem between the tables of a config whose tables are each valid."""
    return [
        *_people(config),
        *_agents(config),
        *_cycles(config.agents),
        *_tools(config.agents),
        *_duplicate_ids(config),
        *_triage(config),
        *_folders(config),
        *_publish_feeds(config),
        *_pipelines(config),
        *_deploy_approvers(config),
    ]


def _people(config: Config) -> Iterator[str]:
    seen_people: set[int] = set()
    seen_names: set[str] = set()
    for i, person in enumerate(config.people):
        if person.telegram_id in seen_people:
            yield f"people[{i}].telegram_id: duplicate person {person.telegram_id}"
        seen_people.add(person.telegram_id)
        if person.name.casefold() in seen_names:
            yield (
                f'people[{i}].name: duplicate name "{person.name}" (names say who decided, '
                "and deploy approvers are named)"
            )
        seen_names.add(person.name.casefold())
    if config.people and not any(p.role is Role.owner for p in config.people):
        yield "people: no person has role owner (deploys and P0 need one)"


def _agents(config: Config) -> Iterator[str]:
    ids: set[str] = set()
    for i, agent in enumerate(config.agents):
        if agent.id in ids:
            yield f'agents[{i}].id: duplicate agent id "{agent.id}"'
        ids.add(agent.id)
    hubs = [i for i, agent in enumerate(config.agents) if agent.hub]
    if config.agents and not hubs:
        yield "agents: no agent has hub = true (exactly one must)"
    for i in hubs[1:]:
        yield f"agents[{i}].hub: more than one hub (exactly one agent has hub = true)"
    for i, agent in enumerate(config.agents):
        if agent.reports_to is not None and agent.reports_to not in ids:
            yield f'agents[{i}].reports_to: unknown agent "{agent.reports_to}"'
        yield from _schedule(config, i, agent)
        yield from _workspace(config, i, agent)
        yield from _profiles(config, i, agent)


def _schedule(config: Config, i: int, agent: AgentConfig) -> Iterator[str]:
    """Crontab lines are read in the configured zone, which is the root table's."""
    queue_cron = agent.queue.cron if agent.queue is not None else None
    for key, line in (("queue.cron", queue_cron), ("cron", agent.cron)):
        if line is None:
            continue
        try:
            crontab_trigger(line, config.tz)
        except ValueError as err:
            yield f'agents[{i}].{key}: "{line}" is not a crontab line: {err}'


def _workspace(config: Config, i: int, agent: AgentConfig) -> Iterator[str]:
    base = config.path.parent
    folder = agent.workspace if agent.workspace.is_absolute() else base / agent.workspace
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        yield (
            f"agents[{i}].workspace: folder {folder} {what} "
            "(`fleet init` writes example workspaces)"
        )


def _profiles(config: Config, i: int, agent: AgentConfig) -> Iterator[str]:
    profiles = set(config.anthropic.profiles)
    for j, profile in enumerate(agent.profiles):
        # With no [anthropic.profiles], "primary" is the SDK's own ANTHROPIC_API_KEY.
        if profile not in profiles and (profiles or profile != "primary"):
            default = " (the default)" if profile == "primary" else ""
            yield (
                f'agents[{i}].profiles[{j}]: unknown profile "{profile}"{default}; '
                f"define [anthropic.profiles.{profile}] or list this agent's profiles"
            )


def _cycles(agents: list[AgentConfig]) -> Iterator[str]:
    manager = {agent.id: agent.reports_to for agent in agents}
    reported: set[str] = set()
    for agent in agents:
        chain = [agent.id]
        current = manager.get(agent.id)
        while current is not None and current in manager:
            if current in chain:
                cycle = [*chain[chain.index(current) :], current]
                if not reported.intersection(cycle):
                    yield "agents: reports_to forms a cycle: " + " -> ".join(cycle)
                    reported.update(cycle)
                break
            chain.append(current)
            current = manager[current]


def _tools(agents: list[AgentConfig]) -> Iterator[str]:
    """`authority` and `tools` name what agents.tools defines: a typo would silently take a
    right away (or never grant it)."""
    known_authority, known_tools = authorities(), tool_names()
    for i, agent in enumerate(agents):
        for j, name in enumerate(agent.authority):
            if name not in known_authority:
                yield (
                    f'agents[{i}].authority[{j}]: unknown authority "{name}" '
                    f"(known: {', '.join(known_authority)})"
                )
        for j, name in enumerate(agent.tools):
            if name not in known_tools:
                yield (
                    f'agents[{i}].tools[{j}]: unknown tool "{name}" '
                    f"(known: {', '.join(known_tools)})"
                )


def _duplicate_ids(config: Config) -> Iterator[str]:
    named: dict[str, list[str]] = {
        "mailboxes": [m.id for m in config.mailboxes],
        "checks": [c.id for c in config.checks],
        "deploys": [d.id for d in config.deploys],
        "folders": [f.id for f in config.folders],
        "publish_targets": [t.id for t in config.publish_targets],
        "pipelines": [p.id for p in config.pipelines],
        "web.sources": [w.id for w in config.web.sources],
    }
    for kind, item_ids in named.items():
        seen: set[str] = set()
        for i, item_id in enumerate(item_ids):
            if item_id in seen:
                yield f'{kind}[{i}].id: duplicate id "{item_id}"'
            seen.add(item_id)


def _triage(config: Config) -> Iterator[str]:
    """Triage's model calls are billed to an agent: the named one, or the hub."""
    if not config.mailboxes:
        return
    if config.triage.agent is not None:
        if config.triage.agent not in {a.id for a in config.agents}:
            yield f'triage.agent: unknown agent "{config.triage.agent}"'
    elif config.agents and config.hub is None:
        yield "triage.agent: no hub to bill triage model calls to; name an agent"


def _folders(config: Config) -> Iterator[str]:
    """Folders exist (or are created) and are folders; agents are granted only known ones."""
    for i, folder in enumerate(config.folders):
        if folder.id == WORKSPACE_ROOT:
            yield (
                f'folders[{i}].id: "{WORKSPACE_ROOT}" names each agent\'s own workspace; '
                "choose another id"
            )
        path = config.folder_path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            yield f"folders[{i}].path: {path} exists and is not a folder"
        except OSError as err:
            yield f"folders[{i}].path: cannot create {path}: {err.strerror}"
    known = {f.id for f in config.folders}
    for i, agent in enumerate(config.agents):
        for folder_id in agent.folders:
            if folder_id not in known:
                listed = ", ".join(sorted(known)) or "none in [[folders]]"
                yield (
                    f'agents[{i}].folders.{folder_id}: unknown folder "{folder_id}" '
                    f"(known: {listed})"
                )


def _publish_feeds(config: Config) -> Iterator[str]:
    feeds = {name for name, _ in config.feeds.items()}
    for i, target in enumerate(config.publish_targets):
        named = target.feed if target.kind == "telegram" and target.chat_id is None else None
        if named is not None and named not in feeds:
            yield f'publish_targets[{i}].feed: unknown feed "{target.feed}"'


def _pipelines(config: Config) -> Iterator[str]:
    """Steps name known agents and folders, and each agent may write (or read) the folder."""
    agents: dict[str, AgentConfig] = {}
    for each in config.agents:
        agents.setdefault(each.id, each)  # a duplicate id is reported on its own
    folders = {f.id for f in config.folders}
    for i, pipeline in enumerate(config.pipelines):
        where = f"pipelines[{i}]"
        if pipeline.folder not in folders:
            yield f'{where}.folder: unknown folder "{pipeline.folder}"'
        for j, step in enumerate(pipeline.steps):
            agent = agents.get(step.agent)
            if agent is None:
                yield f'{where}.steps[{j}].agent: unknown agent "{step.agent}"'
                continue
            need = "rw" if step.produces else "ro"
            granted = agent.folders.get(pipeline.folder)
            if granted not in (("rw",) if need == "rw" else ("rw", "ro")):
                yield (
                    f"{where}.steps[{j}].agent: {step.agent} needs folders = "
                    f'{{ {pipeline.folder} = "{need}" }} to hand files forward'
                )


def _deploy_approvers(config: Config) -> Iterator[str]:
    owners = {p.name for p in config.people if p.role is Role.owner}
    for i, deploy in enumerate(config.deploys):
        listed = deploy.approvers if isinstance(deploy.approvers, list) else []
        for j, name in enumerate(listed):
            if name not in owners:
                yield (
                    f'deploys[{i}].approvers[{j}]: "{name}" is not an owner in [[people]] '
                    "(deploys need an owner)"
                )
