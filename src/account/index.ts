export { accountRoutes, ACCOUNT_CLIENT_ID, FRESH_LOGIN } from './routes.ts';
