"""The org chart: who reports to whom, from `reports_to` in the config."""

from __future__ import annotations

import difflib

from bot.config import AgentConfig, Config


class OrgChart:
    def __init__(self, config: Config) -> None:
        self._agents = {agent.id: agent for agent in config.agents}

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    def get(self, agent_id: str) -> AgentConfig | None:
        return self._agents.get(agent_id)

    @property
    def ids(self) -> list[str]:
        return list(self._agents)

    @property
    def hub(self) -> AgentConfig | None:
        return next((agent for agent in self._agents.values() if agent.hub), None)

    def manager(self, agent_id: str) -> str | None:
        agent = self._agents.get(agent_id)
        return agent.reports_to if agent else None

    def is_below(self, agent_id: str, manager_id: str) -> bool:
        """True if `agent_id` reports to `manager_id`, directly or further down."""
        seen: set[str] = set()
        current = self.manager(agent_id)
        while current is not None and current not in seen:
            if current == manager_id:
                return True
            seen.add(current)
            current = self.manager(current)
        return False

    def reports(self, manager_id: str) -> list[str]:
        return [a for a in self._agents if self.is_below(a, manager_id)]

    def closest(self, name: str, n: int = 3) -> list[str]:
        return difflib.get_close_matches(name, list(self._agents), n=n, cutoff=0.4)
