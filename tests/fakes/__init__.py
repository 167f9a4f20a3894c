"""The fakes of Discord and RunPod the tests drive the real bot against."""

# How long a test waits for something the fakes should see before it calls it a hang. Generous on
# purpose: a wait ends as soon as the thing happens, so only a hang pays it, and a loaded 2-core
# machine is slow, not broken.
HANG_GUARD = 30.0
