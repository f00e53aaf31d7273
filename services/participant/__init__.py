"""The participant program: what an organisation runs next to its own data to join a federation over REST.

`Participant` (importable) and `safe-fedllm client` (its command line): enrol once, then loop on the
aggregator's task, train locally when sampled, submit the adapter, wait for the next round.
"""

from services.participant.participant import Participant
from services.participant.settings import ParticipantSettings

__all__ = ["Participant", "ParticipantSettings"]
