export { accountRoutes, ACCOUNT_CLIENT_ID, FRESH_LOGIN } from './routes.ts';
export { accountSessions, type AccountSession } from './account-session.ts';
