"""What ``freshrec status`` reports: every arm's versions and pin, and the experiment so far.

Read from Redis alone (the vector store and the counters every worker adds to), so it shows
the whole deployment, not one process.
"""

from __future__ import annotations

from typing import Any

from worker.config import Settings
from worker.experiments.ramp import live_shares
from worker.experiments.stats import SequentialTest
from worker.experiments.summary import summarize, user_ratio
from worker.runtime.app import counters, ramp_controller, redis_client, vector_store

__all__ = ["deployment_status"]


def deployment_status(settings: Settings) -> dict[str, Any]:
    """Versions, pins and experiment statistics of every configured arm (blocks on Redis)."""
    client = redis_client(settings)
    store = vector_store(settings, client)
    exp = settings.experiment
    arms = {}
    for arm in exp.arms:
        info = store.current(arm.name)
        arms[arm.name] = {
            "lineage": arm.lineage, "share": arm.share,
            "current": info.version if info else None,
            "items": info.item_count if info else 0,
            "created_at": info.created_at if info else None,
            "versions": store.versions(arm.name), "pinned": store.pinned(arm.name),
        }
    totals = counters(settings, client).arm_totals()
    control = totals.get(exp.control, {})
    # One look at the current totals (the worker's running minimum is not in Redis); a
    # relative mixing scale is taken from the control's CTR now.
    seq = {a.name: SequentialTest(exp.sequential_tau, exp.sequential_mde,
                                  exp.sequential_burn_in).update(
               control.get("click", 0), control.get("impression", 0),
               totals.get(a.name, {}).get("click", 0),
               totals.get(a.name, {}).get("impression", 0))
           for a in exp.arms if a.name != exp.control}
    c_user = user_ratio(control, "click", exp.user_buckets)
    user_seq = {a.name: SequentialTest(exp.sequential_tau, exp.sequential_mde,
                                       exp.sequential_burn_in).update_ratio(
                    c_user, user_ratio(totals.get(a.name, {}), "click", exp.user_buckets))
                for a in exp.arms if a.name != exp.control}
    stats = summarize(exp, totals, sequential_p=seq, user_sequential_p=user_seq)
    controller = ramp_controller(settings, client)
    if controller.ramped:
        ramps = controller.look(totals, act=False)
        shares = live_shares(exp, ramps)
        stats["srm_p_value"] = controller.srm_p_value
        stats["srm_alert"] = controller.srm_p_value < exp.srm_p_value
        stats["ramps"] = {a: {"step": r.step, "of": len(next(x.ramp for x in exp.arms
                                                              if x.name == a)),
                              "share": shares[a], "stopped": r.stopped, "held": r.held,
                              "reason": r.reason} for a, r in ramps.items()}
    return {"experiment": exp.name, "arms": arms, "statistics": stats}
