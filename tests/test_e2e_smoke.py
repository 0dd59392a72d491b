"""First end-to-end check: a sale over real TCP against the simulator."""

from helpers import TID, run, sale, terminal


def test_sale_approved(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            r = await sale(t, 1234)
            return r
        finally:
            await t.close()

    r = run(go())
    assert r.status == "approved", r
    assert r.record.state.value == "APPROVED"
    rows = sim.ledger.approved(TID)
    assert len(rows) == 1
