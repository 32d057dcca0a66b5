import pytest
from test_openai_clients import test_a_soak_of_streams_through_the_whole_path_cuts_none as soak, named_host  # noqa


@pytest.mark.parametrize("round_", range(16))
def test_repeat(serving, named_host, round_):
    soak(serving, named_host)
