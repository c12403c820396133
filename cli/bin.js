#!/usr/bin/env node
// The `ferry` command: TypeScript sources run through tsx's require hook.
// The AWS SDK warns once per process that future releases will need Node 22; not the user's concern.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
require('tsx/cjs/api').register();
require('./ferry.ts').main(process.argv);
