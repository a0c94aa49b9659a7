"""Data builders: read a source, localize the evidence, make the positive / counterfactual / random-masked variants
and write a manifest (DESIGN.md, "The data contract").

The stages, each in its own module: `adapters` (source formats -> `Item`s), `localize` (evidence and distractor
boxes), `variants` (masks and fills), `worker` (one shard, end to end), `manifest` (shard files, merge, summary),
`build` (the `mmrl build` command), `preview` (`mmrl preview`). Importing the package does no work.
"""
