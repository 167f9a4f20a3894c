"""What the cogs share: answering in time, sending within Discord's limits, rendering, buttons,
delivery and progress. Nothing here is an extension; every extension is a module of `cogs/`."""
