"""site.yml, the playbook users run, checks the catalog before its first host task: a bad field fails with the
message naming it, and the real host shows no change (no task changed, no package, no file under the model cache).

Real: the host over SSH, site.yml as users run it (its cluster play is never reached). The catalog asks for the
pre-download into a fresh cache folder, so a host task that ran would leave that folder behind.
"""

from converge_helper import converge
from playbook import recaps

CACHE = "/srv/catalog-first-cache"
GOOD = {"name": "tiny-llama", "model": "example/tiny-llama", "params_b": 1.1}


def _state(host):
    """What a host task would change: the packages, the cache folder, the files the host roles write."""
    return {"packages": host.check_output("dpkg-query -W -f '${Package} ${Version} ${Status}\\n'"),
            "cache": host.file(CACHE).exists,
            "files": host.run("find /etc/rancher /etc/apt /etc/systemd/system /usr/local/bin /opt /srv -xdev -printf '%p %T@\\n' 2>/dev/null | sort").stdout}


def test_a_bad_catalog_field_fails_before_any_host_task(host):
    before = _state(host)
    bad = dict(GOOD, dtype="float8")
    rc, out = converge({"llmserve_models": [bad], "llmserve_models_predownload": True,
                        "llmserve_model_cache_path": CACHE}, playbook="playbooks/site.yml")
    flat = " ".join(out.split())
    assert rc != 0, out[-3000:]
    assert "llmserve_models[0] (tiny-llama).dtype: unknown dtype 'float8'" in flat, out[-3000:]
    assert "TASK [llmserve.k3s.plan : Check the catalog and the tracing settings]" in out
    # The host play never started: no task ran on the host, none changed anything anywhere.
    assert "PLAY [Prepare the GPU hosts]" not in out
    recap = recaps(out)
    assert all(counts.get("changed", 0) == 0 for counts in recap.values()), recap
    assert recap.get("llmserve-mol-default", {}).get("ok", 0) == 0, recap
    assert _state(host) == before


def test_the_same_run_with_the_field_fixed_reaches_the_host(host):
    """The counterpart: without the bad field the same run gets to the host and makes the cache folder (the tags keep
    it to the model cache; the pre-download is off: no Hub here)."""
    try:
        rc, out = converge({"llmserve_models": [GOOD], "llmserve_model_cache_path": CACHE}, tags="storage",
                           playbook="playbooks/host.yml")
        assert rc == 0, out[-3000:]
        assert host.file(CACHE + "/huggingface/hub").is_directory
    finally:
        host.run("rm -rf " + CACHE)
