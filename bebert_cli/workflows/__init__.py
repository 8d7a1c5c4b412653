"""One module per training command, each the whole of its command's orchestration: `finetune`, `binarize`,
`ensemble`, sharing one `context.RunContext` (output sink, data options, accelerator, output directory,
publish and resume). The commands in `cli/` parse options, call one function here and print its result."""
