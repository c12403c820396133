#!/usr/bin/env node
'use strict';
// The `ferry` command of the installed CLI package: the bundle npm run pack built from cli/ferry.ts.
// The AWS SDK warns once per process that future releases will need Node 22; not the user's concern.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
require('../dist/ferry.js').main(process.argv);
