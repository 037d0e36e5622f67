// Lint: typescript-eslint's recommended type-aware rules, plus the boundaries STYLE.md asks for.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'data/', 'test-artifacts/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: false }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        { selector: "MemberExpression[object.name='process'][property.name='env']", message: 'Only src/config reads process.env.' },
      ],
      'no-restricted-imports': ['error', { patterns: [{ group: ['oidc-provider/lib/*'], message: 'Use only the public exports of oidc-provider.' }] }],
    },
  },
  {
    // Composition roots hand the environment to src/config; tests and benchmarks set it up.
    files: ['src/config/**', 'src/main.ts', 'src/cli/main.ts', 'test/**', 'bench/**', 'eslint.config.js'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    // node:test's describe/it return promises the runner itself awaits.
    files: ['test/**'],
    rules: { '@typescript-eslint/no-floating-promises': 'off' },
  },
  {
    files: ['src/accounts/**', 'src/clients/**', 'src/keys/**', 'src/audit/**', 'src/smart/**', 'src/consent/**', 'src/mfa/**'],
    rules: {
      'no-restricted-imports': ['error', { paths: ['koa', 'oidc-provider', '@koa/router'], patterns: ['oidc-provider/*'] }],
    },
  },
  { files: ['eslint.config.js'], ...tseslint.configs.disableTypeChecked },
);
