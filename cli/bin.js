#!/usr/bin/env node
// The `ferry` command: TypeScript sources run through tsx's require hook.
require('tsx/cjs/api').register();
require('./ferry.ts').main(process.argv);
