"""The agent's HTTP surface: one FastAPI ``APIRouter`` per concern and their shared dependencies."""
