// One lint configuration for every TypeScript and JavaScript file; formatting is Prettier's job.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['cdk.out/', 'dist/', '.ferry/', 'coverage/', 'node_modules/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // An unawaited promise is a lost error or a race in a queue worker.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false, attributes: false } }],
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: {
      globals: {
        require: 'readonly',
        module: 'writable',
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        __dirname: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setImmediate: 'readonly',
        URL: 'readonly',
      },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // Loaded on first use, not at start: the CLI's heavy commands (each `ferry` call would pay
    // ~1.2 s under tsx), the local API's handlers (after the stack has set their environment)
    // and the X-Ray tracer (only when tracing is on). CommonJS `require` is how to load lazily
    // and synchronously here; everything else imports.
    files: ['cli/ferry.ts', 'local/api-server.ts', 'lambdas/observability.ts'],
    rules: {
      '@typescript-eslint/no-require-imports': [
        'error',
        { allow: ['^\\.\\./local/start$', '^\\.\\./workers/', '^\\.\\./lambdas/api/', '^@aws-lambda-powertools/tracer$'] },
      ],
    },
  },
  prettier,
);
